"""Procedural image sets made by the project itself (used to train and test the bundled model)."""
from .shapes import CLASS_NAMES, NUM_CLASSES, balanced_labels, image_grid, render, save_png, shapes_batch

__all__ = ["CLASS_NAMES", "NUM_CLASSES", "balanced_labels", "image_grid", "render", "save_png", "shapes_batch"]

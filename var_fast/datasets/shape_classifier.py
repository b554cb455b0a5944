"""A small CNN that recognises the classes of the procedural shapes set (var_fast.datasets.shapes).

Trained in seconds on the CPU on the generator's own images (never on a model's samples), it is the
independent judge of whether a model trained on the set draws recognisable classes: used by
tests/test_default_model.py and scripts/eval_default_model.py.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .shapes import NUM_CLASSES, shapes_batch


def classifier_input(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> (B, 1, 32, 32): brightness (the HSV value, which separates shape
    and background by construction), standardised per image, the background made negative."""
    v = F.adaptive_avg_pool2d(images.float().amax(dim=1, keepdim=True), 32)
    v = v - v.mean(dim=(1, 2, 3), keepdim=True)
    v = v / (v.std(dim=(1, 2, 3), keepdim=True) + 1e-2)
    border = torch.cat([v[..., 0, :], v[..., -1, :], v[..., :, 0], v[..., :, -1]], dim=-1).mean(dim=(1, 2))
    return v * torch.where(border > 0, -1.0, 1.0)[:, None, None, None]


def soften(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Blur two thirds of the images (down 2x or 4x, bilinear up): generated images are softer than
    the crisp training renders."""
    B, _, H, W = images.shape
    out = images.clone()
    which = torch.randint(3, (B,), generator=g)
    for factor, k in ((2, 1), (4, 2)):
        sel = which == k
        if sel.any():
            small = F.avg_pool2d(images[sel], factor)
            out[sel] = F.interpolate(small, size=(H, W), mode="bilinear", align_corners=False)
    return out


def make_classifier() -> nn.Module:
    def block(cin: int, cout: int, stride: int):
        return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(*block(1, 32, 2), *block(32, 48, 2), *block(48, 64, 2), *block(64, 64, 1),
                         nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(64, NUM_CLASSES))


def train_classifier(images: int = 2400, steps: int = 360, batch: int = 64, lr: float = 3e-3,
                     seed: int = 1234) -> nn.Module:
    """The classifier, trained on ``images`` procedural images (seeded; leaves torch's global RNG
    state as it found it)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        imgs, labels = shapes_batch(images, g)
        x = classifier_input(soften(imgs, g))
        model = make_classifier()
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        for step in range(steps):
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
            pick = torch.randint(images, (batch,), generator=g)
            loss = F.cross_entropy(model(x[pick]), labels[pick])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return model(classifier_input(images.cpu())).argmax(dim=1)

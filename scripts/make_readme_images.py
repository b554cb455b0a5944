"""Make the README's example images from the bundled default model (deterministic, well under a minute on a CPU).

    PYTHONPATH=. python scripts/make_readme_images.py    # writes docs/default_grid.png and docs/edit_example.png

docs/default_grid.png: the grid that README's first command (``var-fast sample`` with no checkpoint)
writes to samples/grid.png, a row per class, enlarged for the README.

docs/edit_example.png: one row per edit, columns input | mask (the input, darkened where new content is
generated) | edited. The inputs
are the model's own samples (so the figure needs nothing but the bundled model); each edit uses the
model's recommended sampling settings and a fixed seed on the reference backend.
"""
from __future__ import annotations

import os
import sys
import tempfile

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import var_fast  # noqa: E402
from var_fast.cli import main as cli_main  # noqa: E402
from var_fast.cli.common import save_png  # noqa: E402
from var_fast.cli.sample import make_grid  # noqa: E402
from var_fast.default_model import default_model_info  # noqa: E402
from var_fast.editing import inpaint_mask, outpaint_mask  # noqa: E402

SCALE = 3  # upscale the 64 px tiles (nearest) so that they are visible in the README


def class_id(names, name: str) -> int:
    return names.index(name) if name in names else 0


def edit_rows(sampler, names, recommended):
    """(input, mask, label, caption) per row; box coordinates in pixels of the model's resolution."""
    S = sampler.image_size
    q, h = S // 4, S // 2
    source = sampler.sample([class_id(names, n) for n in ("disk", "square", "stripes", "star")], seed=0, **recommended)
    return [
        (source[0], inpaint_mask(S, q, q, S - q, S - q), None, "in-paint the centre, no class"),
        (source[1], outpaint_mask(S, q, q, S - q, S - q), None, "out-paint around the centre, no class"),
        (source[2], inpaint_mask(S, 0, h, S, S), class_id(names, "checkerboard"), "right half -> checkerboard"),
        (source[3], inpaint_mask(S, 0, 0, h, S), class_id(names, "heart"), "top half -> heart"),
    ]


def enlarge(image: torch.Tensor, factor: int = SCALE) -> torch.Tensor:
    return torch.nn.functional.interpolate(image[None], scale_factor=factor, mode="nearest")[0]


def default_grid(path: str) -> None:
    """What ``var-fast sample`` writes with no arguments (the CLI itself, on the CPU)."""
    from PIL import Image
    import numpy as np
    with tempfile.TemporaryDirectory() as tmp:
        if cli_main(["sample", "--out", tmp, "--device", "cpu"]) != 0:
            raise SystemExit("var-fast sample failed")
        with Image.open(os.path.join(tmp, "grid.png")) as img:
            grid = torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1).float().div(255)
    save_png(enlarge(grid, 2), path)
    print(f"wrote {path}")


def main() -> None:
    os.makedirs(os.path.join(ROOT, "docs"), exist_ok=True)
    default_grid(os.path.join(ROOT, "docs", "default_grid.png"))
    info = default_model_info()
    names = info.get("class_names", [])
    rec = info.get("sampling", {})
    recommended = dict(cfg=rec.get("cfg", 4.0), top_k=rec.get("top_k", 900), top_p=rec.get("top_p", 0.95))
    sampler = var_fast.load(device="cpu", backend="reference")
    tiles = []
    for seed, (image, mask, label, caption) in enumerate(edit_rows(sampler, names, recommended)):
        edited = sampler.edit(image[None], mask, label, seed=seed, **recommended)[0]
        tiles += [image, image * (0.25 + 0.75 * mask), edited]
        print(f"row {seed}: {caption}")
    grid = enlarge(make_grid(torch.stack(tiles), ncol=3, pad=2))
    path = os.path.join(ROOT, "docs", "edit_example.png")
    save_png(grid, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

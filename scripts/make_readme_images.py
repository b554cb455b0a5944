"""Make the README's example images from the bundled default model (deterministic, well under a minute on a CPU).

    PYTHONPATH=. python scripts/make_readme_images.py    # writes docs/default_grid.png and docs/edit_example.png

docs/default_grid.png: the grid that README's first command (``var-fast sample`` with no checkpoint)
writes to samples/grid.png, a row per class, enlarged for the README.

docs/edit_example.png: one row per README edit command (EDIT_COMMANDS, run as written in a folder where
``var-fast sample --out samples`` ran, as after ``make sample``), columns input | mask (the input,
darkened where new content is generated) | edited: the picture is what the commands write.
tests/test_readme.py checks that README shows exactly these commands.
"""
from __future__ import annotations

import os
import sys
import tempfile

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import var_fast  # noqa: E402
from var_fast.cli import build_parser, main as cli_main  # noqa: E402
from var_fast.cli.common import save_png  # noqa: E402
from var_fast.cli.sample import make_grid  # noqa: E402
from var_fast.editing import inpaint_mask, load_image, outpaint_mask  # noqa: E402

SCALE = 3  # upscale the 64 px tiles (nearest) so that they are visible in the README

# README's edit commands, one row of the picture each (inputs: what `make sample` writes)
EDIT_COMMANDS = [
    "var-fast edit --image samples/0000_disk_000.png --box 16 16 48 48 --out inpainted.png",
    "var-fast edit --image samples/0002_square_000.png --box 16 16 48 48 --outpaint --out outpainted.png",
    "var-fast edit --image samples/0008_stripes_000.png --box 0 32 64 64 --class 9 --out checkerboard.png",
    "var-fast edit --image samples/0005_star_000.png --box 0 0 32 64 --class 7 --out heart.png",
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


def edit_tiles(command: str, size: int):
    """Run one README edit command as written (in the current folder): input, mask shown on it, result."""
    argv = command.split()[1:]
    if cli_main(argv) != 0:
        raise SystemExit(f"{command} failed")
    args = build_parser().parse_args(argv)
    image, _ = load_image(args.image, size)
    mask = (outpaint_mask if args.outpaint else inpaint_mask)(size, *args.box)
    edited, _ = load_image(args.out, size)
    return [image, image * (0.25 + 0.75 * mask), edited]


def main() -> None:
    os.makedirs(os.path.join(ROOT, "docs"), exist_ok=True)
    default_grid(os.path.join(ROOT, "docs", "default_grid.png"))
    size = var_fast.load(device="cpu").image_size
    tiles = []
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            if cli_main(["sample", "--out", "samples"]) != 0:  # what `make sample` runs
                raise SystemExit("var-fast sample failed")
            for command in EDIT_COMMANDS:
                tiles += edit_tiles(command, size)
                print(command)
        finally:
            os.chdir(here)
    grid = enlarge(make_grid(torch.stack(tiles), ncol=3, pad=2))
    path = os.path.join(ROOT, "docs", "edit_example.png")
    save_png(grid, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

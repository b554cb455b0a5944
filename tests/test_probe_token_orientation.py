"""scripts/probe_token_orientation.py reads the renders' drawn angle back from their tokens: the angles it uses
must be the ones the generator drew, and the tokens of every scale together must give the angle while the 1x1
token alone (a mean over the whole image) cannot."""
from __future__ import annotations

import math

import pytest
import torch

import var_fast
from var_fast.datasets import CLASS_NAMES, render
from var_fast.datasets.shapes import _MASKS, render_with_params
from repo_scripts import load_script


@pytest.fixture(scope="module")
def probe_script():
    return load_script("probe_token_orientation")


@pytest.mark.parametrize("class_name, seed", [("square", 3), ("cross", 11)])
def test_the_angles_are_the_ones_render_drew(probe_script, class_name, seed):
    """The images are render's for that seed, and undoing the returned rotation puts the shape's mask on the
    render's coverage; another image's angle does not."""
    n = 6
    img, angle = probe_script.renders_and_angles(class_name, n, seed)
    assert torch.equal(img, render(torch.full((n,), CLASS_NAMES.index(class_name)), torch.Generator().manual_seed(seed)))
    _, params = render_with_params(torch.full((n,), CLASS_NAMES.index(class_name)), torch.Generator().manual_seed(seed))
    cx, cy, radius = params["cx"], params["cy"], params["radius"]
    px = (torch.arange(64, dtype=torch.float32) + 0.5) / 64 * 2 - 1

    def mask_for(a):
        c, s = torch.cos(a)[:, None, None], torch.sin(a)[:, None, None]
        dx, dy = px[None, None, :] - cx[:, None, None], px[None, :, None] - cy[:, None, None]
        r = radius[:, None, None]
        return _MASKS[class_name]((c * dx + s * dy) / r, (-s * dx + c * dy) / r).float()

    coverage = (img.mean(dim=1) > img.mean(dim=(1, 2, 3))[:, None, None]).float()
    right = (mask_for(angle) - coverage).abs().mean(dim=(1, 2))
    wrong = (mask_for(angle.roll(1) + 0.3) - coverage).abs().mean(dim=(1, 2))
    assert (right < 0.03).all(), right
    assert (wrong > 2 * right).all(), (right, wrong)


def test_angle_error_reads_the_symmetry(probe_script):
    angle = torch.tensor([0.0, 0.1, 1.0])
    exact = torch.stack([torch.cos(4 * angle), torch.sin(4 * angle)], 1)
    assert probe_script.angle_error_deg(exact, angle, 4).max() < 1e-4
    # a quarter turn is the same cross: no error; an eighth of a turn is the worst
    assert probe_script.angle_error_deg(exact, angle + math.pi / 2, 4).max() < 1e-3
    assert probe_script.angle_error_deg(exact, angle + math.pi / 4, 4).sub(45).abs().max() < 1e-3


def test_probe_finds_the_angle_in_the_fine_scales_not_in_the_first(probe_script):
    sampler = var_fast.load(device="cpu", backend="reference")
    row = probe_script.probe(sampler, "cross", n_fit=300, n_test=60, n_samples=4,
                             sampling=dict(cfg=3.0, top_k=0, top_p=0.8), seed=0)
    assert row["class"] == "cross" and row["chance_error_deg"] == 22.5
    by = row["by_scales"]
    assert [r["scales"] for r in by] == list(range(1, len(sampler.var.patch_nums) + 1))
    assert by[0]["angle_error_deg"] > 15          # one token, the image mean: about chance
    assert by[-1]["angle_error_deg"] < 8          # every scale: the angle is in the tokens
    assert by[-1]["image_r2"] > by[0]["image_r2"]
    assert all(r["samples_amplitude"] >= 0 for r in by)

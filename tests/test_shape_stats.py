"""The statistics of scripts/eval_default_model.py: the colour features' Frechet distance and its per-feature parts,
the foreground's texture, and how alike the shapes' orientations are."""
import math

import pytest
import torch

from var_fast.datasets import CLASS_NAMES, shapes_batch
from var_fast.datasets.shape_stats import (COLOUR_FEATURE_NAMES, EDGE_SYMMETRY, colour_feature_shifts, eroded,
                                           foreground_texture, frechet_distance, orientation_agreement)
from var_fast.datasets.shapes import render_from_params, render_with_params


def features(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, len(COLOUR_FEATURE_NAMES), generator=g) * torch.linspace(0.01, 0.3, 7) + 0.5


def test_the_reference_itself_has_no_shift_and_its_own_spread():
    ref = features(400, 0)
    shifts = colour_feature_shifts(ref, ref)
    assert list(shifts) == list(COLOUR_FEATURE_NAMES)
    assert all(v == {"mean_shift": 0.0, "std_ratio": 1.0} for v in shifts.values())
    assert frechet_distance(ref, ref) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("feature", range(7))
def test_a_shifted_or_narrowed_feature_is_named_in_reference_standard_deviations(feature):
    ref = features(400, 1)
    sd, mean = ref[:, feature].std(), ref[:, feature].mean()
    moved = ref.clone()
    moved[:, feature] += 0.5 * sd  # half a standard deviation up
    shifts = colour_feature_shifts(moved, ref)
    assert shifts[COLOUR_FEATURE_NAMES[feature]] == {"mean_shift": 0.5, "std_ratio": 1.0}
    assert all(v == {"mean_shift": 0.0, "std_ratio": 1.0} for k, v in shifts.items() if k != COLOUR_FEATURE_NAMES[feature])
    narrowed = ref.clone()
    narrowed[:, feature] = mean + (ref[:, feature] - mean) * 0.3  # 30% of the variety, the same mean
    got = colour_feature_shifts(narrowed, ref)[COLOUR_FEATURE_NAMES[feature]]
    assert got == {"mean_shift": 0.0, "std_ratio": 0.3}
    # the Frechet distance of one narrowed feature is its (1 - ratio)^2 in these units
    assert frechet_distance(narrowed, ref) == pytest.approx((1 - 0.3) ** 2, rel=1e-6)


def square_on_gradient(size: int = 32, half: int = 8) -> torch.Tensor:
    """(1, 3, size, size) in [0, 1]: a flat yellow square on a dark blue linear gradient."""
    ramp = torch.linspace(0.1, 0.3, size).view(1, 1, 1, size).expand(1, 3, size, size).clone()
    img = ramp * torch.tensor([0.5, 0.5, 1.0]).view(1, 3, 1, 1)
    c = size // 2
    img[..., c - half:c + half, c - half:c + half] = torch.tensor([0.95, 0.8, 0.2]).view(1, 3, 1, 1)
    return img


def test_eroding_a_mask_keeps_the_pixels_whose_whole_neighbourhood_is_in_it():
    mask = torch.zeros(1, 1, 9, 9)
    mask[..., 1:8, 2:7] = 1  # 7 x 5
    inner = eroded(mask, 2)
    assert inner.sum() == 3 * 1 and torch.equal(inner[0, 0, 3:6, 4], torch.ones(3))
    full = torch.ones(1, 1, 9, 9)
    assert torch.equal(eroded(full, 2), full)  # the image's border is not the mask's


def test_foreground_texture_is_zero_for_a_flat_shape_and_grows_with_blotches():
    img = square_on_gradient()
    assert foreground_texture(img).item() == pytest.approx(0.0, abs=1e-7)
    blotched = img.clone()
    blotched[..., 14:17, 14:17] -= 0.05  # a darker 3x3 blotch inside the square (brightness: the red channel)
    more = img.clone()
    more[..., 14:17, 14:17] -= 0.10
    t1, t2 = foreground_texture(blotched).item(), foreground_texture(more).item()
    assert 0 < t1 < t2
    # renders of the training set are flat inside their shapes, whatever the class
    renders, _ = shapes_batch(40, torch.Generator().manual_seed(0), 64)
    got = foreground_texture(renders)
    assert got.nanmean().item() < 1e-5 and got.isfinite().sum() >= 30


def test_foreground_texture_is_nan_where_too_little_of_the_shape_is_left_inside():
    thin = square_on_gradient()
    thin[..., 8:24, 8:24] = thin[..., 8:9, 30:31]  # no square; instead a bar 3 px tall: nothing left 2 px inside it
    thin[..., 15:18, 2:30] = torch.tensor([0.95, 0.8, 0.2]).view(1, 3, 1, 1)
    assert foreground_texture(thin).isnan().all()
    assert foreground_texture(thin, radius=1).isfinite().all()  # 1 px in, a row of the bar is left


def _crosses(n: int, seed: int, angles=None):
    """``n`` rendered crosses (their own centres, sizes and colours); turned by ``angles`` if given."""
    labels = torch.full((n,), CLASS_NAMES.index("cross"))
    images, params = render_with_params(labels, torch.Generator().manual_seed(seed))
    if angles is not None:
        images = render_from_params(labels, dict(params, angle=torch.as_tensor(angles, dtype=torch.float32)))
    return images, torch.full((n,), EDGE_SYMMETRY["cross"])


def test_orientation_agreement_is_one_for_crosses_turned_alike_up_to_their_symmetry():
    n = 12
    turns = torch.full((n,), 0.3) + torch.arange(n) % 4 * (math.pi / 2)  # a quarter turn leaves a cross as it was
    images, order = _crosses(n, 0, turns)
    assert orientation_agreement(images, order) > 0.95


def test_orientation_agreement_is_small_for_renders_turned_every_way():
    images, order = _crosses(60, 1)
    assert orientation_agreement(images, order) < 0.35  # about 1 / sqrt(60) = 0.13 for uniform turns


def test_orientation_agreement_of_an_eighth_turn_apart_is_none():
    # 45 degrees apart: their 4-fold orientations point opposite ways
    images, order = _crosses(2, 2, [0.1, 0.1 + math.pi / 4])
    assert orientation_agreement(images, order) < 0.1

"""scripts/nearest_render.py: the decoder stage's targets, the render nearest to a drawing."""
from __future__ import annotations

import pytest
import torch

from repo_scripts import load_script
from var_fast.datasets import balanced_labels
from var_fast.datasets.shapes import render_from_params, render_with_params


@pytest.fixture(scope="module")
def nearest():
    return load_script("nearest_render")


def training_batch(per_class: int = 1, seed: int = 0):
    labels = balanced_labels(per_class)
    images, params = render_with_params(labels, torch.Generator().manual_seed(seed))
    return images.mul(2).sub(1), labels, params


def test_jittered_params_keep_every_images_own_first_and_jitter_only_the_geometry_within_bounds(nearest):
    _, labels, params = training_batch()
    n = 5
    out = nearest.jittered_params(params, n, torch.Generator().manual_seed(1))
    B = labels.numel()
    for key, value in params.items():
        rows = out[key].view(B, n + 1, *value.shape[1:])
        assert torch.equal(rows[:, 0], value), key  # each image's own parameters come first
        if key in nearest.GEOMETRY_JITTER:
            diff = (rows[:, 1:] - value[:, None]).abs()
            assert diff.max() <= nearest.GEOMETRY_JITTER[key] + 1e-6 and diff.max() > 0, key
        else:  # colours and the background's gradient are the image's own in every candidate
            assert torch.equal(rows, value[:, None].expand_as(rows)), key


def test_a_drawing_of_the_training_image_gets_the_training_image(nearest):
    x, labels, params = training_batch()
    target, moved = nearest.nearest_renders(x, labels, params, 8, torch.Generator().manual_seed(2))
    torch.testing.assert_close(target, x, rtol=0, atol=1e-6)
    assert not moved.any()


def test_a_drawing_of_a_moved_shape_gets_a_render_nearer_to_it_than_the_training_image(nearest):
    x, labels, params = training_batch(per_class=2, seed=3)
    shifted = render_from_params(labels, {**params, "cx": params["cx"] + 0.07, "angle": params["angle"] + 0.1})
    drawing = shifted.mul(2).sub(1)
    target, moved = nearest.nearest_renders(drawing, labels, params, 48, torch.Generator().manual_seed(4))
    pool = torch.nn.functional.avg_pool2d
    far = (pool(x, 4) - pool(drawing, 4)).pow(2).mean(dim=(1, 2, 3))
    near = (pool(target, 4) - pool(drawing, 4)).pow(2).mean(dim=(1, 2, 3))
    assert (near <= far).all()
    # disks and rings do not change when turned: only the shift tells; every other class gets a moved render
    assert moved.float().mean() > 0.8 and (near < 0.5 * far).float().mean() > 0.8


def test_nearest_renders_refuses_mismatched_batches_and_no_candidates(nearest):
    x, labels, params = training_batch()
    with pytest.raises(ValueError, match="10 drawings, 9 labels"):
        nearest.nearest_renders(x, labels[:9], params, 4)
    with pytest.raises(ValueError, match="n must be >= 1"):
        nearest.nearest_renders(x, labels, params, 0)

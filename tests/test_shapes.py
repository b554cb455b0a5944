"""The procedural image set: drawing again from the parameters a render returns."""
from __future__ import annotations

import pytest
import torch

from var_fast.datasets import NUM_CLASSES, balanced_labels, render, shapes_batch
from var_fast.datasets.shapes import render_from_params, render_with_params, shapes_batch_with_params


@pytest.mark.parametrize("size", [32, 64])
def test_render_from_the_returned_parameters_draws_the_same_images(size):
    labels = balanced_labels(3)
    images, params = render_with_params(labels, torch.Generator().manual_seed(4), size)
    assert torch.equal(images, render(labels, torch.Generator().manual_seed(4), size))
    assert torch.equal(render_from_params(labels, params, size), images)
    assert set(params) == {"cx", "cy", "radius", "period", "angle", "grad_angle", "fg", "bg0", "bg1"}


def test_shapes_batch_with_params_is_shapes_batch_and_leaves_the_generator_where_it_does():
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    images, labels = shapes_batch(20, g1)
    images2, labels2, params = shapes_batch_with_params(20, g2)
    assert torch.equal(images, images2) and torch.equal(labels, labels2)
    assert torch.equal(g1.get_state(), g2.get_state())
    assert torch.equal(render_from_params(labels2, params), images2)


def test_changed_geometry_moves_the_shape_and_keeps_its_colours():
    labels = torch.tensor([4])  # a cross
    images, params = render_with_params(labels, torch.Generator().manual_seed(0))
    moved = render_from_params(labels, {**params, "cx": params["cx"] + 0.125})  # 4 px to the right (1 unit = 32 px)
    assert not torch.equal(moved, images)
    # the same colours: the brightest and darkest pixels are the same ones in both images
    for a, b in ((moved.amax(dim=(2, 3)), images.amax(dim=(2, 3))), (moved.amin(dim=(2, 3)), images.amin(dim=(2, 3)))):
        torch.testing.assert_close(a, b, rtol=0, atol=0.02)
    # the foreground's centre of mass moved right by about 4 px
    def centre_x(img):
        w = (img.mean(1) > 0.5).float()[0]
        return (w.sum(0) * torch.arange(64.0)).sum() / w.sum()
    assert 3.0 < (centre_x(moved) - centre_x(images)).item() < 5.0


def test_render_from_params_refuses_labels_out_of_range():
    _, params = render_with_params(torch.tensor([0]), torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=f"labels must lie in \\[0, {NUM_CLASSES}\\)"):
        render_from_params(torch.tensor([NUM_CLASSES]), params)

"""Keep masks for zero-shot editing: box helpers, image files, reduction to the token grid, per-scale rules."""
import pytest
import torch
from PIL import Image

from var_fast.editing import (edit_labels, fit_square, inpaint_mask, load_image, mask_from_image, outpaint_mask,
                              token_keep_mask)
from var_fast.reference.edit import scale_keep_masks


def test_box_masks():
    keep = inpaint_mask(8, 2, 1, 5, 4)
    assert keep.shape == (8, 8) and keep.dtype == torch.float32
    assert keep[2:5, 1:4].eq(0).all() and keep.sum() == 64 - 9
    assert torch.equal(outpaint_mask(8, 2, 1, 5, 4), 1 - keep)
    assert outpaint_mask((4, 6), 0, 0, 4, 3).sum() == 12


@pytest.mark.parametrize("box", [(2, 2, 2, 5), (0, 0, 9, 4), (-1, 0, 3, 3), (0, 5, 3, 4), (0.5, 0, 3, 3)])
def test_bad_boxes(box):
    with pytest.raises(ValueError, match="box|integers"):
        inpaint_mask(8, *box)


def test_token_grid_mask_is_used_as_given():
    soft = torch.rand(4, 4, generator=torch.Generator().manual_seed(0))
    out = token_keep_mask(soft, image_size=64, grid_size=4, batch_size=3)
    assert out.shape == (3, 4, 4) and all(torch.equal(m, soft) for m in out)


def test_pixel_mask_is_area_averaged_and_thresholded():
    """16x16 pixels per token: a token is kept when more than half (> 128 of 256) of its pixels are."""
    mask = torch.zeros(64, 64)
    mask[:8, :16] = mask[8, 0] = 1         # token (0, 0): 129 kept -> kept
    mask[:8, 16:32] = 1                    # token (0, 1): exactly half -> generated (> 0.5, as the notebook)
    mask[16:32, 16:32] = 0.6               # token (1, 1): grey 0.6 everywhere -> kept
    mask[32:48, :16] = 0.5                 # token (2, 0): grey 0.5 -> generated
    mask[48:, 48:] = 1
    out = token_keep_mask(mask, image_size=64, grid_size=4, batch_size=1)[0]
    expected = torch.zeros(4, 4)
    expected[0, 0] = expected[1, 1] = expected[3, 3] = 1
    assert torch.equal(out, expected)


def test_mask_batch_forms():
    a, b = inpaint_mask(64, 0, 0, 32, 32), outpaint_mask(64, 0, 0, 32, 32)
    per_image = token_keep_mask(torch.stack([a, b]), 64, 4, 2)
    assert torch.equal(per_image[0], 1 - per_image[1])
    assert torch.equal(token_keep_mask(a[None], 64, 4, 2), token_keep_mask(a, 64, 4, 2))
    assert torch.equal(token_keep_mask(a.bool(), 64, 4, 2), token_keep_mask(a, 64, 4, 2))


@pytest.mark.parametrize("mask,match", [
    (torch.ones(32, 32), "must be 64x64 \\(pixels\\) or 4x4"),
    (torch.ones(3, 64, 64), r"shape \(H, W\) or \(2, H, W\)"),
    (torch.ones(1, 1, 64, 64), r"shape \(H, W\) or \(2, H, W\)"),
    (torch.full((4, 4), 1.5), r"values must be in \[0, 1\]"),
    (torch.full((64, 64), -0.1), r"values must be in \[0, 1\]"),
    (torch.full((4, 4), float("nan")), r"values must be in \[0, 1\]"),
])
def test_bad_masks(mask, match):
    with pytest.raises(ValueError, match=match):
        token_keep_mask(mask, image_size=64, grid_size=4, batch_size=2)


def test_scale_masks_bilinear_threshold_and_first_scale():
    """Left half kept on a 4x4 grid: at 2x2 the left column; at 3x3 the middle column samples exactly 0.5
    (bilinear, align_corners=False) and is generated; the 1x1 scale is always kept."""
    mask = torch.zeros(1, 4, 4)
    mask[..., :2] = 1
    keep = scale_keep_masks(mask, (1, 2, 3, 4))
    assert keep[0].tolist() == [[True]]
    assert keep[1].view(2, 2).tolist() == [[True, False], [True, False]]
    assert keep[2].view(3, 3).tolist() == [[True, False, False]] * 3
    assert torch.equal(keep[3].view(4, 4), mask[0].bool())
    nothing = scale_keep_masks(torch.zeros(1, 4, 4), (1, 2, 3, 4))
    assert nothing[0].all() and not any(k.any() for k in nothing[1:])  # 2x2 (4 tokens) is not forced


def test_mask_from_image(tmp_path):
    pixels = torch.tensor([[0, 255, 128, 255]], dtype=torch.uint8).repeat(2, 1)
    path = tmp_path / "mask.png"
    Image.fromarray(pixels.numpy(), mode="L").convert("RGB").save(path)
    mask = mask_from_image(path)
    assert mask.shape == (2, 4) and torch.equal(mask, pixels.float() / 255)
    assert mask_from_image(str(path), size=2).shape == (2, 2)


def test_load_image_resizes_shorter_side_and_center_crops(tmp_path):
    img = torch.zeros(32, 96, 3, dtype=torch.uint8)
    img[:, :32] = 255        # left third white: cropped away
    img[:, 32:64, 0] = 200   # middle third red: kept
    path = tmp_path / "wide.png"
    Image.fromarray(img.numpy()).save(path)
    x, original = load_image(path, 16)
    assert original == (96, 32) and x.shape == (3, 16, 16)
    inner = x[:, :, 2:-2]  # Lanczos rings a little at the crop's edges
    assert (inner[0] - 200 / 255).abs().max() < 0.02 and inner[1:].abs().max() < 0.02
    assert fit_square(Image.new("RGB", (5, 9)), 5, Image.BILINEAR).size == (5, 5)


def test_edit_labels():
    assert edit_labels(None, 10, 3, "cpu").tolist() == [10, 10, 10]
    assert edit_labels(4, 10, 2, "cpu").tolist() == [4, 4]
    assert edit_labels(-1, 10, 2, "cpu").tolist() == [10, 10]
    assert edit_labels([1, 2], 10, 2, "cpu").tolist() == [1, 2]
    with pytest.raises(ValueError, match="got 3 labels for 2 image"):
        edit_labels([1, 2, 3], 10, 2, "cpu")
    with pytest.raises(ValueError, match="label 11 is out of range"):
        edit_labels(11, 10, 2, "cpu")

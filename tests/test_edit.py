"""Sampler.edit: zero-shot in-painting / out-painting / class-conditional editing, both backends.

tests/data/golden_edit.pt holds what upstream's demo_zero_shot_edit.ipynb produced on the deterministic
weights of tests/model_factory.py (float32, CPU): its ``autoregressive_infer_cfg_with_mask`` cell run
unmodified on the upstream VAR/VQVAE loaded with these weights, given token-grid masks (inpainting and
outpainting boxes from its ``get_edit_mask``, a soft per-image mask, an all-zero mask), with the
drawn tokens and the per-scale keep masks recorded around its ``sample_with_top_k_top_p_`` and
``replace_embedding`` calls. Stored: input images (uint8), masks, settings, the input's tokens, the
tokens f_hat was built from, and the output image (uint8).
"""
import os

import pytest
import torch

import var_fast
from model_factory import make_models, save_pair
from var_fast.editing import inpaint_mask, outpaint_mask, token_keep_mask
from var_fast.reference.edit import scale_keep_masks

GOLDEN = torch.load(os.path.join(os.path.dirname(__file__), "data", "golden_edit.pt"), weights_only=True)
BACKENDS = ["reference", "fast"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return {name: save_pair(*make_models(name), str(tmp_path_factory.mktemp(name))) for name in ("d2", "d3_shared")}


_samplers = {}


def get_sampler(checkpoints, name, backend, device):
    key = (name, backend, device)
    if key not in _samplers:
        # float32 on every device (CUDA's default is bfloat16): the comparisons here are token for token
        _samplers[key] = var_fast.load(*checkpoints[name], device=device, dtype=torch.float32, backend=backend)
    return _samplers[key]


def images(n, seed=0, device="cpu"):
    """Smooth random images (upsampled noise), so that their tokens are not noise."""
    low = torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.interpolate(low, size=(64, 64), mode="bilinear", align_corners=False).to(device)


@pytest.mark.parametrize("name", ["d2", "d3_shared"])
@pytest.mark.parametrize("case_index", range(4))
def test_reference_matches_notebook(checkpoints, name, case_index):
    case = GOLDEN[name][case_index]
    sampler = get_sampler(checkpoints, name, "reference", "cpu")
    x = case["images"].float() / 255
    assert all(torch.equal(a, b) for a, b in zip(sampler.encode(x), case["input_tokens"]))
    out, tokens = sampler.edit(x, case["mask"], case["label"], cfg=case["cfg"], top_k=case["top_k"],
                               top_p=case["top_p"], seed=case["seed"], more_smooth=case["more_smooth"],
                               return_tokens=True)
    for si, (got, want) in enumerate(zip(tokens, case["tokens"])):
        assert torch.equal(got, want), f"scale {si}: tokens differ from the notebook's"
    assert (out * 255 - case["image"].float()).abs().max() <= 0.51  # golden image rounded to uint8


def test_golden_cases_generate_and_keep():
    """The stored cases are not degenerate: they keep some tokens, generate others that differ from the input."""
    for case in GOLDEN["d2"][:3]:
        last_in, last_out = case["input_tokens"][-1], case["tokens"][-1]
        same = (last_in == last_out).float().mean()
        assert 0.2 < same < 0.95


@pytest.mark.parametrize("name", ["d2", "d3_shared"])
@pytest.mark.parametrize("cfg", [0.0, 4.0])
def test_greedy_fast_matches_reference(checkpoints, device, name, cfg):
    ref = get_sampler(checkpoints, name, "reference", device)
    fast = get_sampler(checkpoints, name, "fast", device)
    x = images(3, seed=1, device=device)
    mask = torch.stack([inpaint_mask(64, 16, 16, 48, 48), outpaint_mask(64, 0, 0, 32, 64),
                        inpaint_mask(64, 0, 20, 64, 44)])
    out_r, tok_r = ref.edit(x, mask, [1, 10, 5], cfg=cfg, top_k=1, seed=0, return_tokens=True)
    out_f, tok_f = fast.edit(x, mask, [1, 10, 5], cfg=cfg, top_k=1, seed=7, return_tokens=True)
    for si, (a, b) in enumerate(zip(tok_r, tok_f)):
        assert torch.equal(a, b), f"scale {si}: greedy tokens differ"
    torch.testing.assert_close(out_f, out_r, rtol=0, atol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("more_smooth", [False, True])
def test_kept_positions_reproduce_input_tokens(checkpoints, device, backend, more_smooth):
    sampler = get_sampler(checkpoints, "d2", backend, device)
    x = images(2, seed=2, device=device)
    mask = torch.stack([inpaint_mask(64, 8, 8, 40, 56), outpaint_mask(64, 16, 16, 48, 48)])
    out, tokens = sampler.edit(x, mask, [3, 10], top_k=20, top_p=0.9, seed=4, more_smooth=more_smooth,
                               return_tokens=True)
    given = sampler.encode(x)
    keep = scale_keep_masks(token_keep_mask(mask, 64, 4, 2).to(device), sampler.patch_nums)
    assert keep[0].all() and not keep[-1].all()
    changed = 0
    for si, (t, g, k) in enumerate(zip(tokens, given, keep)):
        assert torch.equal(t[k], g[k]), f"scale {si}: a kept token differs from the input's"
        changed += int((t[~k] != g[~k]).sum())
    assert changed > 0, "nothing was generated"
    if not more_smooth:  # the image is decoded from exactly these tokens
        torch.testing.assert_close(sampler.decode(tokens), out, rtol=0, atol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_seeds(checkpoints, device, backend):
    sampler = get_sampler(checkpoints, "d2", backend, device)
    x, mask = images(2, seed=3, device=device), inpaint_mask(64, 16, 0, 48, 64)
    a, ta = sampler.edit(x, mask, seed=5, top_k=30, return_tokens=True)
    b, tb = sampler.edit(x, mask, seed=5, top_k=30, return_tokens=True)
    c, tc = sampler.edit(x, mask, seed=6, top_k=30, return_tokens=True)
    assert torch.equal(a, b) and all(torch.equal(p, q) for p, q in zip(ta, tb))
    assert not torch.equal(ta[-1], tc[-1])


def test_fast_images_do_not_depend_on_their_batch(checkpoints, device):
    sampler = get_sampler(checkpoints, "d2", "fast", device)
    x, mask = images(3, seed=4, device=device), outpaint_mask(64, 16, 16, 48, 48)
    whole, tok_whole = sampler.edit(x, mask, [1, 2, 3], seed=9, top_k=20, return_tokens=True)
    first, tok_first = sampler.edit(x[:1], mask, [1], seed=9, top_k=20, return_tokens=True)
    assert all(torch.equal(a[:1], b) for a, b in zip(tok_whole, tok_first))
    sampler.max_batch_size = 2
    try:
        split, tok_split = sampler.edit(x, mask, [1, 2, 3], seed=9, top_k=20, return_tokens=True)
    finally:
        sampler.max_batch_size = None
    assert all(torch.equal(a, b) for a, b in zip(tok_whole, tok_split))
    torch.testing.assert_close(split, whole, rtol=0, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_labels(checkpoints, backend):
    sampler = get_sampler(checkpoints, "d2", backend, "cpu")
    x, mask = images(1, seed=5), inpaint_mask(64, 0, 0, 64, 32)
    unconditional = sampler.edit(x, mask, None, seed=1, top_k=1)
    assert torch.equal(unconditional, sampler.edit(x, mask, -1, seed=1, top_k=1))
    assert torch.equal(unconditional, sampler.edit(x, mask, [sampler.num_classes], seed=1, top_k=1))
    assert not torch.equal(unconditional, sampler.edit(x, mask, 2, seed=1, top_k=1))


def test_pixel_mask_equals_its_token_grid_mask(checkpoints):
    sampler = get_sampler(checkpoints, "d2", "reference", "cpu")
    x = images(2, seed=6)
    pixels = torch.ones(64, 64)
    pixels[10:40, 5:30] = 0
    grid = token_keep_mask(pixels, 64, 4, 1)[0]
    a = sampler.edit(x, pixels, 4, seed=2, top_k=10)
    assert torch.equal(a, sampler.edit(x, grid, 4, seed=2, top_k=10))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("call,match", [
    (lambda s, x: s.edit(x, torch.ones(8, 8) * 0), "must be 64x64 \\(pixels\\) or 4x4"),
    (lambda s, x: s.edit(x, torch.full((4, 4), 2.0)), r"values must be in \[0, 1\]"),
    (lambda s, x: s.edit(x, torch.ones(64, 64)), "nothing to generate"),
    (lambda s, x: s.edit(x, torch.stack([inpaint_mask(64, 0, 0, 32, 32), torch.ones(64, 64)])),
     "keeps all of image 1: nothing to generate"),
    (lambda s, x: s.edit(x[:, :, :32, :32], inpaint_mask(32, 0, 0, 16, 16)), "must be 64x64 for this VQVAE"),
    (lambda s, x: s.edit(x * 2, inpaint_mask(64, 0, 0, 32, 32)), r"images must have values in \[0, 1\]"),
    (lambda s, x: s.edit(x, inpaint_mask(64, 0, 0, 32, 32), 12), "label 12 is out of range"),
    (lambda s, x: s.edit(x, inpaint_mask(64, 0, 0, 32, 32), [1]), "got 1 labels for 2 image"),
    (lambda s, x: s.edit(x, inpaint_mask(64, 0, 0, 32, 32), top_p=2.0), "top_p must be in"),
])
def test_errors(checkpoints, backend, call, match):
    sampler = get_sampler(checkpoints, "d2", backend, "cpu")
    with pytest.raises(ValueError, match=match):
        call(sampler, images(2))


@pytest.mark.parametrize("backend", BACKENDS)
def test_reduced_precision_keeps_input_tokens(checkpoints, device, backend):
    ref = get_sampler(checkpoints, "d2", "reference", device)
    low = var_fast.Sampler(ref.var, ref.vae, device=torch.device(device), dtype=torch.bfloat16, backend=backend)
    x, mask = images(2, seed=7, device=device), inpaint_mask(64, 16, 16, 48, 48)
    out, tokens = low.edit(x, mask, 1, seed=0, top_k=20, return_tokens=True)
    keep = scale_keep_masks(token_keep_mask(mask, 64, 4, 2).to(device), low.patch_nums)
    assert out.dtype == torch.float32 and out.shape == x.shape
    assert all(torch.equal(t[k], g[k]) for t, g, k in zip(tokens, low.encode(x), keep))

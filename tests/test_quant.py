"""Multi-scale residual quantization ops vs the plain-PyTorch reference (var_fast.reference.quant) and the
reference quantizer (var_fast.models.quantizer.MultiScaleQuantizer): nearest_code, area_downsample,
bicubic_upsample, phi_blend, quant_sampler_step, quant_encode."""
from __future__ import annotations

import pytest
import torch

from conftest import DEVICES, HAS_CUDA, tol
from var_fast.native import extension as _ext
from var_fast.models import PATCH_NUMS_256 as PATCHES_256
from var_fast.models import PATCH_NUMS_512 as PATCHES_512
from var_fast.models.quantizer import MultiScaleQuantizer, phi_index
from var_fast.reference import quant as ref

pytestmark = pytest.mark.skipif(not _ext.available(), reason=f"var_fast._C not built: {_ext.load_error()}")

if _ext.available():
    from var_fast import ops

PATCH_SETS = [pytest.param(PATCHES_256, id="256px"), pytest.param(PATCHES_512, id="512px")]


@pytest.fixture(autouse=True)
def _float32_reference_math():
    """On a GPU the references run in true float32 too (cuDNN convolutions default to TF32): the ops are
    compared with the float32 reference, token for token."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _rng(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _quantizer(V: int, C: int, patch_nums, device, seed: int = 0):
    """A reference quantizer with random codes and random Phi layers (share_quant_resi=4) and its
    parameters in the ops' layout: (q, phi_weights (K,C,C,3,3), phi_biases (K,C), phi_index per scale)."""
    torch.manual_seed(seed)
    q = MultiScaleQuantizer(V, C, patch_nums, quant_resi=0.5, share_quant_resi=4).to(device).eval()
    with torch.no_grad():
        q.embedding.weight.normal_()
        for layer in q.quant_resi.layers():
            layer.bias.normal_(std=0.1)
    layers = q.quant_resi.layers()
    weights = torch.stack([layer.weight.detach() for layer in layers])
    biases = torch.stack([layer.bias.detach() for layer in layers])
    index = [phi_index(si, len(patch_nums), len(layers)) for si in range(len(patch_nums))]
    return q, weights, biases, index


def _non_contiguous(x: torch.Tensor) -> torch.Tensor:
    """The same values in a transposed storage (last two dims swapped in memory)."""
    out = x.transpose(-1, -2).contiguous().transpose(-1, -2)
    assert not out.is_contiguous() and torch.equal(out, x)
    return out


# ---- nearest_code ------------------------------------------------------------------------------------
@pytest.mark.parametrize("N,V,C", [(1, 64, 7), (3, 4096, 32), (7, 64, 32), (257, 64, 7), (1000, 4096, 32)])
def test_nearest_code_matches_reference(device, dtype, N, V, C):
    g = _rng(N * 7 + V + C)
    z = torch.randn(N, C, generator=g).to(device, dtype)
    codebook = torch.randn(V, C, generator=g).to(device, dtype)
    got = ops.nearest_code(z, codebook)
    assert got.dtype == torch.int64 and got.shape == (N,)
    assert torch.equal(got, ref.nearest_code(z, codebook))


@pytest.mark.parametrize("device", DEVICES)
def test_nearest_code_non_contiguous(device):
    g = _rng(1)
    z = torch.randn(300, 32, generator=g).to(device)
    codebook = torch.randn(512, 32, generator=g).to(device)
    got = ops.nearest_code(_non_contiguous(z), _non_contiguous(codebook))
    assert torch.equal(got, ref.nearest_code(z, codebook))
    assert torch.equal(ops.nearest_code(z[::2], codebook), ref.nearest_code(z[::2], codebook))


@pytest.mark.parametrize("device", DEVICES)
def test_nearest_code_duplicated_codes_pick_lowest_index(device):
    g = _rng(2)
    base = torch.randn(40, 16, generator=g)
    codebook = torch.cat([base, base, base[:10]]).to(device)  # code v == code v + 40 (== v + 80 for v < 10)
    z = torch.cat([base[:25] + 0.01 * torch.randn(25, 16, generator=g), torch.randn(200, 16, generator=g)]).to(device)
    got = ops.nearest_code(z, codebook)
    assert torch.equal(got, ref.nearest_code(z, codebook))
    assert bool((got < 40).all()), "a duplicated code must resolve to its first copy"
    assert torch.equal(got[:25], torch.arange(25, device=device))


@pytest.mark.parametrize("device", DEVICES)
def test_nearest_code_exact_midpoints(device):
    # Small-integer codes: every distance below is computed exactly, so midpoints are exact ties.
    g = _rng(3)
    codebook = torch.randint(-4, 5, (64, 8), generator=g).float()
    a = torch.randint(0, 64, (500,), generator=g)
    b = torch.randint(0, 64, (500,), generator=g)
    z = ((codebook[a] + codebook[b]) / 2).to(device)
    codebook = codebook.to(device)
    got = ops.nearest_code(z, codebook)
    assert torch.equal(got, ref.nearest_code(z, codebook))
    # A hand-built tie: z at the midpoint of codes 5 and 2, every other code further away.
    cb = torch.full((8, 4), 10.0)
    cb[5] = torch.tensor([1.0, 0.0, 0.0, 0.0])
    cb[2] = torch.tensor([-1.0, 0.0, 0.0, 0.0])
    tie = ops.nearest_code(torch.zeros(3, 4, device=device), cb.to(device))
    assert tie.tolist() == [2, 2, 2]


@pytest.mark.parametrize("device", DEVICES)
def test_nearest_code_z_equal_to_a_code(device):
    g = _rng(4)
    codebook = torch.randn(4096, 32, generator=g).to(device)
    idx = torch.randint(0, 4096, (300,), generator=g).to(device)
    got = ops.nearest_code(codebook[idx], codebook)
    assert torch.equal(got, idx)
    assert torch.equal(got, ref.nearest_code(codebook[idx], codebook))


@pytest.mark.parametrize("device", DEVICES)
def test_nearest_code_rounding_level_near_ties(device):
    # Midpoints of random (non-representable) codes: the two distances differ only by rounding, so the
    # winner is decided by the float32 rounding of the reference formula.
    g = _rng(5)
    codebook = torch.randn(256, 32, generator=g)
    a = torch.randint(0, 256, (2000,), generator=g)
    b = torch.randint(0, 256, (2000,), generator=g)
    z = ((codebook[a] + codebook[b]) / 2).to(device)
    codebook = codebook.to(device)
    assert torch.equal(ops.nearest_code(z, codebook), ref.nearest_code(z, codebook))


@pytest.mark.parametrize("device", DEVICES)
def test_nearest_code_graded_gaps(device):
    # z = midpoint(a, b) + s (e_a - e_b): d(b) - d(a) = 2 s |e_a - e_b|^2 exactly. Gaps from 1e-8 to 1e-1
    # cover the rows certified at once, those needing the exact re-check, and those left to the fallback.
    g = _rng(18)
    codebook = torch.randn(1024, 32, generator=g)
    a = torch.randint(0, 1024, (3000,), generator=g)
    b = (a + 1 + torch.randint(0, 1023, (3000,), generator=g)) % 1024
    diff = (codebook[a] - codebook[b]).double()
    gap = 10 ** torch.empty(3000, dtype=torch.float64).uniform_(-8, -1, generator=g)
    s = gap / (2 * diff.square().sum(1))
    z = ((codebook[a].double() + codebook[b].double()) / 2 + s[:, None] * diff).float().to(device)
    codebook = codebook.to(device)
    got = ops.nearest_code(z, codebook)
    assert torch.equal(got, ref.nearest_code(z, codebook))
    # where the exact (float64) nearest code leads by far more than any rounding, it is the answer
    exact = torch.cdist(z.double().cpu(), codebook.double().cpu()).square().topk(2, dim=1, largest=False)
    clear = (exact.values[:, 1] - exact.values[:, 0] > 1e-2).to(device)
    assert int(clear.sum()) > 1000
    assert torch.equal(got[clear], exact.indices[:, 0].to(device)[clear])


@pytest.mark.parametrize("device", DEVICES)
def test_nearest_code_non_finite_rows_follow_reference(device):
    g = _rng(6)
    z = torch.randn(6, 8, generator=g)
    z[1, 3] = float("nan")
    z[4, 0] = float("inf")
    codebook = torch.randn(32, 8, generator=g)
    z, codebook = z.to(device), codebook.to(device)
    assert torch.equal(ops.nearest_code(z, codebook), ref.nearest_code(z, codebook))


def test_nearest_code_empty_and_errors():
    cb = torch.randn(16, 4)
    assert ops.nearest_code(torch.empty(0, 4), cb).shape == (0,)
    with pytest.raises(RuntimeError, match="codebook"):
        ops.nearest_code(torch.randn(3, 5), cb)
    with pytest.raises(RuntimeError, match="2-D"):
        ops.nearest_code(torch.randn(3, 4, 1), cb)
    with pytest.raises(RuntimeError, match="at least one code"):
        ops.nearest_code(torch.randn(3, 4), torch.empty(0, 4))
    with pytest.raises(RuntimeError, match="float32, float16 or bfloat16"):
        ops.nearest_code(torch.randn(3, 4).double(), cb)


# ---- area_downsample / bicubic_upsample ---------------------------------------------------------------
RESAMPLE_CASES = [(16, s) for s in (13, 10, 6, 5, 3, 1)] + [(32, s) for s in (24, 18, 13, 9, 6)] + [(7, 3)]


@pytest.mark.parametrize("H,size", RESAMPLE_CASES)
@pytest.mark.parametrize("B,C", [(1, 32), (3, 7)])
def test_area_downsample_matches_reference(device, dtype, B, C, H, size):
    x = torch.randn(B, C, H, H, generator=_rng(H * size + C)).to(device, dtype)
    got = ops.area_downsample(x, size)
    assert got.shape == (B, C, size, size) and got.dtype == dtype
    expected = ref.area_downsample(x, size)
    torch.testing.assert_close(got, expected, **(dict(rtol=1e-6, atol=1e-6) if dtype == torch.float32 else tol(dtype)))


@pytest.mark.parametrize("h,size", [(h, 16) for h in PATCHES_256[:-1]] + [(h, 32) for h in PATCHES_512[:-1]]
                         + [(5, 3), (16, 16)])
@pytest.mark.parametrize("B,C", [(1, 32), (3, 7)])
def test_bicubic_upsample_matches_reference(device, dtype, B, C, h, size):
    x = torch.randn(B, C, h, h, generator=_rng(h * size + C)).to(device, dtype)
    got = ops.bicubic_upsample(x, size)
    assert got.shape == (B, C, size, size) and got.dtype == dtype
    expected = ref.bicubic_upsample(x, size)
    torch.testing.assert_close(got, expected, **(dict(rtol=1e-5, atol=2e-6) if dtype == torch.float32 else tol(dtype)))


@pytest.mark.parametrize("device", DEVICES)
def test_resample_non_contiguous_and_non_square(device):
    g = _rng(7)
    x = torch.randn(2, 5, 16, 16, generator=g).to(device)
    nc = x.to(memory_format=torch.channels_last)
    torch.testing.assert_close(ops.area_downsample(nc, 6), ref.area_downsample(x, 6), rtol=1e-6, atol=1e-6)
    small = torch.randn(2, 5, 6, 4, generator=g).to(device)  # non-square source
    torch.testing.assert_close(ops.bicubic_upsample(_non_contiguous(small), 16), ref.bicubic_upsample(small, 16),
                               rtol=1e-5, atol=2e-6)
    torch.testing.assert_close(ops.area_downsample(x[:, :, ::2], 3), ref.area_downsample(x[:, :, ::2], 3),
                               rtol=1e-6, atol=1e-6)


def test_resample_errors():
    with pytest.raises(RuntimeError, match="size must be >= 1"):
        ops.area_downsample(torch.randn(1, 2, 4, 4), 0)
    with pytest.raises(RuntimeError, match="4-D"):
        ops.bicubic_upsample(torch.randn(2, 4, 4), 8)


# ---- phi_blend ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("B,C,H", [(1, 32, 16), (3, 32, 32), (3, 7, 5), (1, 7, 17)])
@pytest.mark.parametrize("ratio", [0.5, 0.0])
def test_phi_blend_matches_reference(device, dtype, B, C, H, ratio):
    g = _rng(B * 100 + C * 10 + H)
    h = torch.randn(B, C, H, H, generator=g).to(device, dtype)
    weight = (torch.randn(C, C, 3, 3, generator=g) / (3 * C ** 0.5)).to(device, dtype)
    bias = torch.randn(C, generator=g).to(device, dtype)
    got = ops.phi_blend(h, weight, bias, ratio)
    assert got.shape == h.shape and got.dtype == dtype
    torch.testing.assert_close(got, ref.phi_blend(h, weight, bias, ratio), **tol(dtype))
    if ratio == 0.0:
        assert torch.equal(got, h)


@pytest.mark.parametrize("device", DEVICES)
def test_phi_blend_non_contiguous(device):
    g = _rng(8)
    h = torch.randn(2, 32, 16, 16, generator=g).to(device)
    weight = (torch.randn(32, 32, 3, 3, generator=g) * 0.05).to(device)
    bias = torch.randn(32, generator=g).to(device)
    expected = ref.phi_blend(h, weight, bias, 0.5)
    strided_bias = torch.stack([bias, bias], dim=1)[:, 0]
    assert not strided_bias.is_contiguous()
    got = ops.phi_blend(h.to(memory_format=torch.channels_last), _non_contiguous(weight), strided_bias, 0.5)
    torch.testing.assert_close(got, expected, **tol(torch.float32))


def test_phi_blend_errors():
    h = torch.randn(1, 4, 5, 5)
    with pytest.raises(RuntimeError, match=r"weight must be \(C, C, 3, 3\)"):
        ops.phi_blend(h, torch.randn(4, 4, 1, 1), torch.randn(4), 0.5)
    with pytest.raises(RuntimeError, match=r"bias must be \(C,\)"):
        ops.phi_blend(h, torch.randn(4, 4, 3, 3), torch.randn(3), 0.5)


# ---- quant_sampler_step vs MultiScaleQuantizer.next_autoregressive_input -------------------------------------
@pytest.mark.parametrize("patch_nums", PATCH_SETS)
@pytest.mark.parametrize("B,C,V", [(1, 32, 4096), (3, 7, 64)])
@pytest.mark.parametrize("codebook_dtype", [torch.float32, torch.bfloat16], ids=["cb_fp32", "cb_bf16"])
def test_quant_sampler_step_matches_quantizer(device, patch_nums, B, C, V, codebook_dtype):
    q, weights, biases, index = _quantizer(V, C, patch_nums, device, seed=B + C)
    if codebook_dtype != torch.float32:  # the reference then embeds the rounded codes
        with torch.no_grad():
            q.embedding.weight.copy_(q.embedding.weight.to(codebook_dtype).float())
    codebook = q.embedding.weight.detach().to(codebook_dtype)
    S, H = len(patch_nums), patch_nums[-1]
    g = _rng(9)
    f_ref = torch.zeros(B, C, H, H, device=device)
    f_hat = torch.zeros(B, C, H, H, device=device)
    for si, pn in enumerate(patch_nums):
        tokens = torch.randint(0, V, (B, pn * pn), generator=g).to(device)
        with torch.no_grad():
            h = q.embedding(tokens).transpose(1, 2).reshape(B, C, pn, pn)
            f_ref, next_ref = q.next_autoregressive_input(si, f_ref, h)
        next_size = patch_nums[si + 1] if si + 1 < S else 0
        k = index[si]
        got = ops.quant_sampler_step(tokens, codebook, f_hat, weights[k], biases[k], 0.5, next_size)
        torch.testing.assert_close(f_hat, f_ref, rtol=1e-5, atol=1e-5)
        if next_size:
            assert got.shape == (B, C, next_size, next_size) and got.dtype == torch.float32
            torch.testing.assert_close(got, next_ref, rtol=1e-5, atol=1e-5)
        else:
            assert got.numel() == 0
    assert float(f_hat.abs().max()) > 0.1  # the loop really accumulated something


@pytest.mark.parametrize("device", DEVICES)
def test_quant_sampler_step_non_contiguous_f_hat_and_tokens(device):
    q, weights, biases, _ = _quantizer(64, 8, PATCHES_256, device)
    g = _rng(10)
    tokens = torch.randint(0, 64, (9, 2), generator=g).to(device).t()  # (2, 3*3), non-contiguous
    start = torch.randn(2, 8, 16, 16, generator=g).to(device)
    f_ref = start.clone()
    f_hat = start.clone().to(memory_format=torch.channels_last)
    assert not f_hat.is_contiguous()
    expected = ref.quant_sampler_step(tokens, q.embedding.weight.detach(), f_ref, weights[1], biases[1], 0.5, 5)
    got = ops.quant_sampler_step(tokens, q.embedding.weight.detach(), f_hat, weights[1], biases[1], 0.5, 5)
    torch.testing.assert_close(f_hat, f_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_quant_sampler_step_errors():
    cb = torch.randn(16, 4)
    w, b = torch.randn(4, 4, 3, 3), torch.randn(4)
    f_hat = torch.zeros(2, 4, 8, 8)
    tokens = torch.randint(0, 16, (2, 4))
    with pytest.raises(RuntimeError, match="token out of range"):
        ops.quant_sampler_step(torch.full((2, 4), 16), cb, f_hat, w, b, 0.5, 3)
    with pytest.raises(RuntimeError, match="token out of range"):
        ops.quant_sampler_step(torch.full((2, 4), -1), cb, f_hat, w, b, 0.5, 3)
    with pytest.raises(RuntimeError, match="f_hat must be float32"):
        ops.quant_sampler_step(tokens, cb, f_hat.half(), w, b, 0.5, 3)
    with pytest.raises(RuntimeError, match="square map"):
        ops.quant_sampler_step(torch.randint(0, 16, (2, 5)), cb, f_hat, w, b, 0.5, 3)
    with pytest.raises(RuntimeError, match="square map"):
        ops.quant_sampler_step(torch.randint(0, 16, (2, 81)), cb, f_hat, w, b, 0.5, 3)
    with pytest.raises(RuntimeError, match=r"tokens must be \(B, pn\*pn\)"):
        ops.quant_sampler_step(torch.randint(0, 16, (3, 4)), cb, f_hat, w, b, 0.5, 3)
    with pytest.raises(RuntimeError, match="codebook must be"):
        ops.quant_sampler_step(tokens, torch.randn(16, 5), f_hat, w, b, 0.5, 3)
    with pytest.raises(RuntimeError, match="phi_weight must be"):
        ops.quant_sampler_step(tokens, cb, f_hat, torch.randn(4, 4, 1, 1), b, 0.5, 3)
    with pytest.raises(RuntimeError, match="phi_bias must be"):
        ops.quant_sampler_step(tokens, cb, f_hat, w, torch.randn(5), 0.5, 3)
    with pytest.raises(RuntimeError, match="int64"):
        ops.quant_sampler_step(tokens.int(), cb, f_hat, w, b, 0.5, 3)
    with pytest.raises(RuntimeError, match="next_size"):
        ops.quant_sampler_step(tokens, cb, f_hat, w, b, 0.5, -1)
    assert torch.equal(f_hat, torch.zeros_like(f_hat)), "a rejected call must not touch f_hat"


# ---- quant_encode vs MultiScaleQuantizer.f_to_idx --------------------------------------------------------------
@pytest.mark.parametrize("patch_nums", PATCH_SETS)
@pytest.mark.parametrize("B,C,V", [(1, 32, 4096), (3, 32, 64), (3, 7, 4096)])
def test_quant_encode_matches_quantizer_token_for_token(device, patch_nums, B, C, V):
    q, weights, biases, index = _quantizer(V, C, patch_nums, device, seed=V + C)
    H = patch_nums[-1]
    f = torch.randn(B, C, H, H, generator=_rng(B * C + V)).to(device)
    with torch.no_grad():
        expected = q.f_to_idx(f)
    got = ops.quant_encode(f, q.embedding.weight.detach(), weights, biases, index, 0.5, patch_nums)
    assert len(got) == len(patch_nums)
    for si, (a, e) in enumerate(zip(got, expected)):
        assert a.dtype == torch.int64 and a.shape == (B, patch_nums[si] ** 2)
        assert torch.equal(a, e), f"scale {si}: {(a != e).sum().item()} tokens differ"
    # the plain-PyTorch reference of the op is the quantizer's loop
    plain = ref.quant_encode(f, q.embedding.weight.detach(), weights, biases, index, 0.5, patch_nums)
    assert all(torch.equal(a, e) for a, e in zip(plain, expected))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_quant_encode_reduced_precision_inputs(device, dtype):
    q, weights, biases, index = _quantizer(512, 32, PATCHES_256, device, seed=11)
    f = torch.randn(2, 32, 16, 16, generator=_rng(12)).to(device, dtype)
    cb = q.embedding.weight.detach().to(dtype)
    got = ops.quant_encode(f, cb, weights.to(dtype), biases.to(dtype), index, 0.5, PATCHES_256)
    expected = ref.quant_encode(f, cb, weights.to(dtype), biases.to(dtype), index, 0.5, PATCHES_256)
    for a, e in zip(got, expected):
        assert torch.equal(a, e)


@pytest.mark.parametrize("device", DEVICES)
def test_quant_encode_non_contiguous_features(device):
    q, weights, biases, index = _quantizer(256, 16, PATCHES_256, device, seed=13)
    f = torch.randn(2, 16, 16, 16, generator=_rng(14)).to(device)
    with torch.no_grad():
        expected = q.f_to_idx(f)
    got = ops.quant_encode(f.to(memory_format=torch.channels_last), _non_contiguous(q.embedding.weight.detach()),
                           weights, biases, index, 0.5, PATCHES_256)
    assert all(torch.equal(a, e) for a, e in zip(got, expected))


def test_quant_encode_errors():
    cb = torch.randn(16, 4)
    w, b = torch.randn(2, 4, 4, 3, 3), torch.randn(2, 4)
    f = torch.randn(1, 4, 8, 8)
    pns = [1, 2, 4, 8]
    with pytest.raises(RuntimeError, match="last patch size"):
        ops.quant_encode(f, cb, w, b, [0, 0, 1, 1], 0.5, [1, 2, 4])
    with pytest.raises(RuntimeError, match="last patch size"):
        ops.quant_encode(torch.randn(1, 4, 8, 6), cb, w, b, [0, 0, 1, 1], 0.5, pns)
    with pytest.raises(RuntimeError, match="phi_index must lie"):
        ops.quant_encode(f, cb, w, b, [0, 0, 2, 1], 0.5, pns)
    with pytest.raises(RuntimeError, match="phi_index must lie"):
        ops.quant_encode(f, cb, w, b, [0, -1, 1, 1], 0.5, pns)
    with pytest.raises(RuntimeError, match="one entry per scale"):
        ops.quant_encode(f, cb, w, b, [0, 1], 0.5, pns)
    with pytest.raises(RuntimeError, match="patch_nums must lie"):
        ops.quant_encode(f, cb, w, b, [0, 0, 1, 1], 0.5, [1, 0, 4, 8])
    with pytest.raises(RuntimeError, match="codebook must be"):
        ops.quant_encode(f, torch.randn(16, 3), w, b, [0, 0, 1, 1], 0.5, pns)
    with pytest.raises(RuntimeError, match="phi_weights must be"):
        ops.quant_encode(f, cb, w[:, :, :2], b, [0, 0, 1, 1], 0.5, pns)
    with pytest.raises(RuntimeError, match="phi_biases must be"):
        ops.quant_encode(f, cb, w, b[:1], [0, 0, 1, 1], 0.5, pns)


# ---- CUDA against the CPU op ---------------------------------------------------------------------------------
@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_cuda_ops_match_cpu_ops():
    g = _rng(19)
    z, cb = torch.randn(5000, 32, generator=g), torch.randn(4096, 32, generator=g)
    assert torch.equal(ops.nearest_code(z.cuda(), cb.cuda()).cpu(), ops.nearest_code(z, cb))
    x = torch.randn(3, 7, 32, 32, generator=g)
    torch.testing.assert_close(ops.area_downsample(x.cuda(), 13).cpu(), ops.area_downsample(x, 13), rtol=0, atol=0)
    torch.testing.assert_close(ops.bicubic_upsample(x[:, :, :9, :9].cuda(), 32).cpu(),
                               ops.bicubic_upsample(x[:, :, :9, :9], 32), rtol=1e-6, atol=1e-6)
    w, b = torch.randn(7, 7, 3, 3, generator=g) * 0.2, torch.randn(7, generator=g)
    torch.testing.assert_close(ops.phi_blend(x.cuda(), w.cuda(), b.cuda(), 0.5).cpu(), ops.phi_blend(x, w, b, 0.5),
                               rtol=1e-5, atol=1e-5)
    q, weights, biases, index = _quantizer(4096, 32, PATCHES_512, "cpu", seed=15)
    cb = q.embedding.weight.detach()
    f = torch.randn(3, 32, 32, 32, generator=_rng(16))
    cpu_tokens = ops.quant_encode(f, cb, weights, biases, index, 0.5, PATCHES_512)
    cuda_tokens = ops.quant_encode(f.cuda(), cb.cuda(), weights.cuda(), biases.cuda(), index, 0.5, PATCHES_512)
    assert all(torch.equal(a, b.cpu()) for a, b in zip(cpu_tokens, cuda_tokens))
    f_cpu, f_cuda = torch.zeros(3, 32, 32, 32), torch.zeros(3, 32, 32, 32, device="cuda")
    for si, tokens in enumerate(cpu_tokens):
        next_size = PATCHES_512[si + 1] if si + 1 < len(PATCHES_512) else 0
        k = index[si]
        a = ops.quant_sampler_step(tokens, cb, f_cpu, weights[k], biases[k], 0.5, next_size)
        b = ops.quant_sampler_step(tokens.cuda(), cb.cuda(), f_cuda, weights[k].cuda(), biases[k].cuda(), 0.5,
                                   next_size)
        torch.testing.assert_close(b.cpu(), a, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(f_cuda.cpu(), f_cpu, rtol=1e-5, atol=1e-5)


# ---- opcheck -------------------------------------------------------------------------------------------------
def _opcheck_cases(device):
    g = _rng(17)
    C, V = 8, 32
    cb = torch.randn(V, C, generator=g).to(device)
    w = (torch.randn(C, C, 3, 3, generator=g) * 0.1).to(device)
    b = torch.randn(C, generator=g).to(device)
    return [
        (torch.ops.var_fast.nearest_code.default, (torch.randn(10, C, generator=g).to(device), cb)),
        (torch.ops.var_fast.area_downsample.default, (torch.randn(2, C, 16, 16, generator=g).to(device), 5)),
        (torch.ops.var_fast.bicubic_upsample.default, (torch.randn(2, C, 3, 3, generator=g).to(device), 16)),
        (torch.ops.var_fast.phi_blend.default, (torch.randn(2, C, 8, 8, generator=g).to(device), w, b, 0.5)),
        (torch.ops.var_fast.quant_sampler_step.default,
         (torch.randint(0, V, (2, 9), generator=g).to(device), cb, torch.zeros(2, C, 8, 8, device=device), w, b, 0.5,
          4)),
        (torch.ops.var_fast.quant_sampler_step.default,
         (torch.randint(0, V, (2, 64), generator=g).to(device), cb, torch.zeros(2, C, 8, 8, device=device), w, b, 0.5,
          0)),
        (torch.ops.var_fast.quant_encode.default,
         (torch.randn(2, C, 8, 8, generator=g).to(device), cb, w[None].repeat(2, 1, 1, 1, 1), b[None].repeat(2, 1),
          [0, 0, 1, 1], 0.5, [1, 2, 4, 8])),
    ]


@pytest.mark.parametrize("case", range(7))
def test_opcheck(device, case):
    op, args = _opcheck_cases(device)[case]
    torch.library.opcheck(op, args)

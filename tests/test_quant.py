"""Multi-scale residual quantization ops vs the plain-PyTorch reference (var_fast.reference.quant) and the
reference quantizer (var_fast.models.quantizer.MultiScaleQuantizer): nearest_code, area_downsample,
bicubic_upsample, phi_blend, quant_sampler_step, quant_encode.

Every op is compared with the reference run on the same device and the same tensors: an op promises the
reference formula's argmin with its own device's BLAS, not the tokens of another device. On ``emu`` (the
CUDA sources run by the CPU emulator, ~1000x slower than native) the large shapes are reduced
(``_emu_shape``); the 256px patch set, odd sizes, V = 1 and 1x1 scales still run there."""
from __future__ import annotations

import pytest
import torch

from conftest import tol
from var_fast.native import extension as _ext
from var_fast.models import PATCH_NUMS_256 as PATCHES_256
from var_fast.models import PATCH_NUMS_512 as PATCHES_512
from var_fast.models.quantizer import MultiScaleQuantizer, phi_index
from var_fast.reference import quant as ref

pytestmark = pytest.mark.skipif(not _ext.available(), reason=f"var_fast._C not built: {_ext.load_error()}")

if _ext.available():
    from var_fast import ops

PATCH_SETS = [pytest.param(PATCHES_256, id="256px"), pytest.param(PATCHES_512, id="512px")]
TOKEN_OUT_OF_RANGE = 16  # status::kTokenOutOfRange (csrc/include/var_fast/status_flags.h)


def _emu_shape(device_name: str, full, emu):
    """`full` on cpu and cuda, the smaller `emu` under the CUDA emulator."""
    return emu if device_name == "emu" else full


def _skip_on_emu(device_name: str, why: str) -> None:
    if device_name == "emu":
        pytest.skip(f"emu: {why}")


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
def test_nearest_code_matches_reference(device, device_name, dtype, N, V, C):
    g = _rng(N * 7 + V + C)
    N, V = _emu_shape(device_name, (N, V), (min(N, 300), min(V, 1024)))
    z = torch.randn(N, C, generator=g).to(device, dtype)
    codebook = torch.randn(V, C, generator=g).to(device, dtype)
    got = ops.nearest_code(z, codebook)
    assert got.dtype == torch.int64 and got.shape == (N,)
    assert torch.equal(got, ref.nearest_code(z, codebook))


def test_nearest_code_non_contiguous(device):
    g = _rng(1)
    z = torch.randn(300, 32, generator=g).to(device)
    codebook = torch.randn(512, 32, generator=g).to(device)
    got = ops.nearest_code(_non_contiguous(z), _non_contiguous(codebook))
    assert torch.equal(got, ref.nearest_code(z, codebook))
    assert torch.equal(ops.nearest_code(z[::2], codebook), ref.nearest_code(z[::2], codebook))


def test_nearest_code_duplicated_codes_pick_lowest_index(device):
    g = _rng(2)
    base = torch.randn(40, 16, generator=g)
    codebook = torch.cat([base, base, base[:10]]).to(device)  # code v == code v + 40 (== v + 80 for v < 10)
    z = torch.cat([base[:25] + 0.01 * torch.randn(25, 16, generator=g), torch.randn(200, 16, generator=g)]).to(device)
    got = ops.nearest_code(z, codebook)
    assert torch.equal(got, ref.nearest_code(z, codebook))
    assert bool((got < 40).all()), "a duplicated code must resolve to its first copy"
    assert torch.equal(got[:25], torch.arange(25, device=device))


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


def test_nearest_code_z_equal_to_a_code(device):
    g = _rng(4)
    codebook = torch.randn(4096, 32, generator=g).to(device)
    idx = torch.randint(0, 4096, (300,), generator=g).to(device)
    got = ops.nearest_code(codebook[idx], codebook)
    assert torch.equal(got, idx)
    assert torch.equal(got, ref.nearest_code(codebook[idx], codebook))


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


def test_nearest_code_non_finite_rows_follow_reference(device):
    g = _rng(6)
    z = torch.randn(6, 8, generator=g)
    z[1, 3] = float("nan")
    z[4, 0] = float("inf")
    codebook = torch.randn(32, 8, generator=g)
    z, codebook = z.to(device), codebook.to(device)
    assert torch.equal(ops.nearest_code(z, codebook), ref.nearest_code(z, codebook))


def test_nearest_code_empty_and_errors(device):
    with torch.device(device):  # every factory call below creates on the device
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


def test_resample_errors(device):
    with torch.device(device):  # every factory call below creates on the device
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


def test_phi_blend_errors(device):
    with torch.device(device):  # every factory call below creates on the device
        h = torch.randn(1, 4, 5, 5)
        with pytest.raises(RuntimeError, match=r"weight must be \(C, C, 3, 3\)"):
            ops.phi_blend(h, torch.randn(4, 4, 1, 1), torch.randn(4), 0.5)
        with pytest.raises(RuntimeError, match=r"bias must be \(C,\)"):
            ops.phi_blend(h, torch.randn(4, 4, 3, 3), torch.randn(3), 0.5)


# ---- quant_sampler_step vs MultiScaleQuantizer.next_autoregressive_input -------------------------------------
@pytest.mark.parametrize("patch_nums", PATCH_SETS)
@pytest.mark.parametrize("B,C,V", [(1, 32, 4096), (3, 7, 64)])
@pytest.mark.parametrize("codebook_dtype", [torch.float32, torch.bfloat16], ids=["cb_fp32", "cb_bf16"])
def test_quant_sampler_step_matches_quantizer(device, device_name, patch_nums, B, C, V, codebook_dtype):
    if patch_nums is PATCHES_512:
        _skip_on_emu(device_name, "the 256px patch set covers the same kernels at a quarter of the cost")
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


def test_quant_sampler_step_errors(device):
    with torch.device(device):  # every factory call below creates on the device
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
        with pytest.raises(RuntimeError, match="status must be a contiguous int32 tensor of one element"):
            ops.quant_sampler_step(tokens, cb, f_hat, w, b, 0.5, 3, status=torch.zeros(1, dtype=torch.int64))
        with pytest.raises(RuntimeError, match="status must be a contiguous int32 tensor of one element"):
            ops.quant_sampler_step(tokens, cb, f_hat, w, b, 0.5, 3, status=torch.zeros(2, dtype=torch.int32))
        assert torch.equal(f_hat, torch.zeros_like(f_hat)), "a rejected call must not touch f_hat"


# ---- quant_encode vs MultiScaleQuantizer.f_to_idx --------------------------------------------------------------
@pytest.mark.parametrize("patch_nums", PATCH_SETS)
@pytest.mark.parametrize("B,C,V", [(1, 32, 4096), (3, 32, 64), (3, 7, 4096)])
def test_quant_encode_matches_quantizer_token_for_token(device, device_name, patch_nums, B, C, V):
    if patch_nums is PATCHES_512:
        _skip_on_emu(device_name, "the 256px patch set covers the same kernels at a quarter of the cost")
    V = _emu_shape(device_name, V, min(V, 512))  # nearest_code dominates the emulated time
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


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_quant_encode_reduced_precision_inputs(device, dtype):
    q, weights, biases, index = _quantizer(512, 32, PATCHES_256, device, seed=11)
    f = torch.randn(2, 32, 16, 16, generator=_rng(12)).to(device, dtype)
    cb = q.embedding.weight.detach().to(dtype)
    got = ops.quant_encode(f, cb, weights.to(dtype), biases.to(dtype), index, 0.5, PATCHES_256)
    expected = ref.quant_encode(f, cb, weights.to(dtype), biases.to(dtype), index, 0.5, PATCHES_256)
    for a, e in zip(got, expected):
        assert torch.equal(a, e)


def test_quant_encode_non_contiguous_features(device):
    q, weights, biases, index = _quantizer(256, 16, PATCHES_256, device, seed=13)
    f = torch.randn(2, 16, 16, 16, generator=_rng(14)).to(device)
    with torch.no_grad():
        expected = q.f_to_idx(f)
    got = ops.quant_encode(f.to(memory_format=torch.channels_last), _non_contiguous(q.embedding.weight.detach()),
                           weights, biases, index, 0.5, PATCHES_256)
    assert all(torch.equal(a, e) for a, e in zip(got, expected))


def test_quant_encode_errors(device):
    with torch.device(device):  # every factory call below creates on the device
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


# ---- the CUDA code (GPU or emulated) against the reference on its device, and the CPU op ----------------------
def test_kernel_ops_match_reference(kernel_device, device_name):
    """Tokens against the reference on the same device; the resampling and Phi kernels also against the
    CPU ops (torch.ops.var_fast.*), which compute the same float32 formulas."""
    emu = device_name == "emu"
    g = _rng(19)
    N, V = (400, 1024) if emu else (5000, 4096)
    z, cb = torch.randn(N, 32, generator=g).to(kernel_device), torch.randn(V, 32, generator=g).to(kernel_device)
    assert torch.equal(ops.nearest_code(z, cb), ref.nearest_code(z, cb))
    x = torch.randn(3, 7, 32, 32, generator=g)
    xd = x.to(kernel_device)
    area = ops.area_downsample(xd, 13)
    torch.testing.assert_close(area, ref.area_downsample(xd, 13), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(area.cpu(), torch.ops.var_fast.area_downsample(x, 13), rtol=0, atol=0)
    small = x[:, :, :9, :9]
    up = ops.bicubic_upsample(small.to(kernel_device), 32)
    torch.testing.assert_close(up, ref.bicubic_upsample(small.to(kernel_device), 32), rtol=1e-5, atol=2e-6)
    torch.testing.assert_close(up.cpu(), torch.ops.var_fast.bicubic_upsample(small, 32), rtol=1e-6, atol=1e-6)
    w, b = torch.randn(7, 7, 3, 3, generator=g) * 0.2, torch.randn(7, generator=g)
    phi = ops.phi_blend(xd, w.to(kernel_device), b.to(kernel_device), 0.5)
    torch.testing.assert_close(phi, ref.phi_blend(xd, w.to(kernel_device), b.to(kernel_device), 0.5), **tol(torch.float32))
    torch.testing.assert_close(phi.cpu(), torch.ops.var_fast.phi_blend(x, w, b, 0.5), rtol=1e-5, atol=1e-5)

    patch_nums, B, V = (PATCHES_256, 2, 512) if emu else (PATCHES_512, 3, 4096)
    H = patch_nums[-1]
    q, weights, biases, index = _quantizer(V, 32, patch_nums, kernel_device, seed=15)
    cb = q.embedding.weight.detach()
    f = torch.randn(B, 32, H, H, generator=_rng(16)).to(kernel_device)
    with torch.no_grad():
        expected = q.f_to_idx(f)
    tokens = ops.quant_encode(f, cb, weights, biases, index, 0.5, patch_nums)
    assert all(torch.equal(a, e) for a, e in zip(tokens, expected))
    f_ref, f_hat = torch.zeros_like(f), torch.zeros_like(f)
    for si, t in enumerate(tokens):
        next_size = patch_nums[si + 1] if si + 1 < len(patch_nums) else 0
        with torch.no_grad():
            h = q.embedding(t).transpose(1, 2).reshape(B, 32, patch_nums[si], patch_nums[si])
            f_ref, next_ref = q.next_autoregressive_input(si, f_ref, h)
        got = ops.quant_sampler_step(t, cb, f_hat, weights[index[si]], biases[index[si]], 0.5, next_size)
        torch.testing.assert_close(f_hat, f_ref, rtol=1e-5, atol=1e-5)
        if next_size:
            torch.testing.assert_close(got, next_ref, rtol=1e-5, atol=1e-5)


# ---- edge shapes: V = 1, 1x1 scales, odd sizes ------------------------------------------------------------------
def test_edge_shapes_match_reference(device):
    g = _rng(21)
    one = torch.randn(1, 5, generator=g).to(device)
    z = torch.randn(7, 5, generator=g).to(device)
    assert torch.equal(ops.nearest_code(z, one), torch.zeros(7, dtype=torch.int64, device=device))
    C, H, patch_nums = 3, 7, (1, 3, 4, 7)  # odd channels and sizes, a 1x1 first scale
    weights = (torch.randn(2, C, C, 3, 3, generator=g) * 0.3).to(device)
    biases = torch.randn(2, C, generator=g).to(device)
    index = [0, 0, 1, 1]
    f = torch.randn(2, C, H, H, generator=g).to(device)
    for V in (1, 5):
        cb = torch.randn(V, C, generator=g).to(device)
        got = ops.quant_encode(f, cb, weights, biases, index, 0.5, patch_nums)
        expected = ref.quant_encode(f, cb, weights, biases, index, 0.5, patch_nums)
        assert all(torch.equal(a, e) for a, e in zip(got, expected))
        f_hat, f_ref = torch.zeros_like(f), torch.zeros_like(f)
        for si, tokens in enumerate(got):
            next_size = patch_nums[si + 1] if si + 1 < len(patch_nums) else 0
            k = index[si]
            out = ops.quant_sampler_step(tokens, cb, f_hat, weights[k], biases[k], 0.5, next_size)
            out_ref = ref.quant_sampler_step(tokens, cb, f_ref, weights[k], biases[k], 0.5, next_size)
            torch.testing.assert_close(f_hat, f_ref, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-5)


# ---- quant_sampler_step's status flag -----------------------------------------------------------------------------
def _status_case(device, pn: int):
    """V = 16 codes, C = 4, f_hat (2, 4, 8, 8); tokens (2, pn*pn) with out-of-range values far outside the
    codebook (a read of them would fault), and the same tokens with those replaced by code 0."""
    g = _rng(22 + pn)
    cb = torch.randn(16, 4, generator=g).to(device)
    w = (torch.randn(4, 4, 3, 3, generator=g) * 0.3).to(device)
    b = torch.randn(4, generator=g).to(device)
    bad = torch.randint(0, 16, (2, pn * pn), generator=g)
    bad[0, 1], bad[1, 0], bad[1, -1] = 16, -(2 ** 40), 2 ** 40
    as_zero = torch.where((bad >= 0) & (bad < 16), bad, 0)
    return cb, w, b, bad.to(device), as_zero.to(device)


@pytest.mark.parametrize("pn", [3, 8], ids=["upsampled", "direct"])  # bicubic code map, and pn == H
def test_quant_sampler_step_status_flags_out_of_range_tokens(device, pn):
    cb, w, b, bad, as_zero = _status_case(device, pn)
    status = ops.new_status(device)
    f_hat = torch.zeros(2, 4, 8, 8, device=device)
    got = ops.quant_sampler_step(bad, cb, f_hat, w, b, 0.5, 3, status=status)  # no raise, no host check
    assert int(status.item()) == TOKEN_OUT_OF_RANGE
    with pytest.raises(RuntimeError, match=r"token out of range: tokens must lie in \[0, V\) with V = 16"):
        ops.check_status(status, 16)
    # memory-safe: the bad tokens were read as code 0, the others as usual
    f_zero = torch.zeros_like(f_hat)
    expected = ops.quant_sampler_step(as_zero, cb, f_zero, w, b, 0.5, 3)
    assert torch.equal(f_hat, f_zero) and torch.equal(got, expected)
    # without status: the clear error, before f_hat is touched
    f_untouched = torch.zeros_like(f_hat)
    with pytest.raises(RuntimeError, match="token out of range"):
        ops.quant_sampler_step(bad, cb, f_untouched, w, b, 0.5, 3)
    assert not f_untouched.any()


def test_quant_sampler_step_status_stays_clear_for_valid_tokens(device):
    cb, w, b, _, tokens = _status_case(device, 3)
    status = ops.new_status(device)
    f_flagged, f_plain = torch.zeros(2, 4, 8, 8, device=device), torch.zeros(2, 4, 8, 8, device=device)
    got = ops.quant_sampler_step(tokens, cb, f_flagged, w, b, 0.5, 3, status=status)
    expected = ops.quant_sampler_step(tokens, cb, f_plain, w, b, 0.5, 3)
    assert int(status.item()) == 0
    ops.check_status(status, 16)
    assert torch.equal(f_flagged, f_plain) and torch.equal(got, expected)
    # flags accumulate over calls: a later bad step ORs into the same word
    bad = tokens.clone()
    bad[0, 0] = 16
    ops.quant_sampler_step(bad, cb, f_flagged, w, b, 0.5, 0, status=status)
    assert int(status.item()) == TOKEN_OUT_OF_RANGE


# ---- launch plans on the emulated GPU: every branch, on the GPUs of tests/emu/device.py -------------------------
def _phi_inputs(B, C, H, W, seed):
    g = _rng(seed)
    return (torch.randn(B, C, H, W, generator=g), (torch.randn(C, C, 3, 3, generator=g) / (3 * C ** 0.5)),
            torch.randn(C, generator=g))


def _phi_tile_rows(launch, C, W):
    """Rows per tile of a phi_tile_kernel launch: its shared memory holds C * (rows + 2) * (W + 2) floats."""
    rows, rest = divmod(launch.smem, 4 * C * (W + 2))
    assert rest == 0, launch
    return rows - 2


# tile_rows of the sampler step's Phi at 16x16, C = 32 (plan_phi_tiles: about two blocks per SM): the batch
# sizes of the benchmarks and FID sampling give multi-row tiles, with a partial last tile where 16 % rows != 0.
PHI_TILE_ROWS = {("h100", 32): 2, ("h100", 64): 4, ("a100", 32): 3, ("a100", 64): 4, ("rtx4090", 32): 2,
                 ("rtx4090", 64): 4, ("a10", 32): 4, ("a10", 64): 6, ("l4", 32): 4, ("l4", 64): 8}


@pytest.mark.parametrize("B", [32, 64])
def test_sampler_step_multi_row_tiles_match_cpu(device_description, emulated_gpu, B):
    """The fused sampler step at batch 32 / 64 (16x16, C = 32, 10x10 tokens upsampled) equals the CPU op on every
    described GPU, with the tile plan that GPU gets."""
    C, H, V = 32, 16, 64
    g = _rng(40 + B)
    codebook, weight, bias = torch.randn(V, C, generator=g), torch.randn(C, C, 3, 3, generator=g) * 0.1, torch.randn(C, generator=g)
    tokens = torch.randint(0, V, (B, 100), generator=g)
    start = torch.randn(B, C, H, H, generator=g)
    f_cpu, f_emu = start.clone(), start.clone()
    expected = torch.ops.var_fast.quant_sampler_step(tokens, codebook, f_cpu, weight, bias, 0.5, 8)
    with emulated_gpu.recorded_launches() as launches:
        got = ops.quant_sampler_step(tokens, codebook, f_emu, weight, bias, 0.5, 8)
    (phi,) = emulated_gpu.launches_of(launches, "phi_tile_kernel")
    rows = PHI_TILE_ROWS[(device_description.name, B)]
    assert _phi_tile_rows(phi, C, H) == rows and phi.grid == (-(-H // rows), B, 1)
    torch.testing.assert_close(f_emu, f_cpu, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.emu
@pytest.mark.parametrize("branch,gpu,shape,rows,smem_optin", [
    pytest.param("one row per tile", "h100", (4, 8, 16, 16), 1, False, id="one-row"),
    # 14 tiles wanted: 8 tiles of 2 rows, 1 in the last
    pytest.param("multi-row tiles, partial last", "a100", (16, 8, 15, 16), 2, False, id="multi-row-partial-a100"),
    pytest.param("multi-row tiles, whole", "l4", (16, 8, 16, 16), 2, False, id="multi-row-whole-l4"),  # 8 tiles of 2
    # 8 rows wanted; 48 KiB holds 5 rows with their halo
    pytest.param("rows capped by 48 KiB, partial last", "l4", (58, 4, 16, 400), 5, False, id="capped-48KiB-l4"),
    # 3 rows of 4 * 1102 floats: 52,896 B
    pytest.param("one row beyond 48 KiB (opt-in)", "h100", (1, 4, 3, 1100), 1, True, id="opt-in-h100"),
])
def test_phi_tile_plan_branches(emulated_gpu, branch, gpu, shape, rows, smem_optin):
    """Each branch of plan_phi_tiles, asserted from the launch it made, and phi_blend equal to the CPU op."""
    B, C, H, W = shape
    h, weight, bias = _phi_inputs(B, C, H, W, seed=50 + H + W)
    emulated_gpu.set_device(emulated_gpu.BY_NAME[gpu])
    with emulated_gpu.recorded_launches() as launches:
        got = ops.phi_blend(h, weight, bias, 0.5)
    (phi,) = emulated_gpu.launches_of(launches, "phi_tile_kernel")
    assert _phi_tile_rows(phi, C, W) == rows, branch
    assert phi.grid == (-(-H // rows), B, 1)
    assert (H % rows != 0) == ("partial" in branch)
    assert (phi.smem > 48 * 1024) == smem_optin
    torch.testing.assert_close(got, torch.ops.var_fast.phi_blend(h, weight, bias, 0.5), rtol=1e-5, atol=1e-5)


@pytest.mark.emu
def test_phi_tile_plan_refuses_a_row_beyond_the_device(emulated_gpu):
    """One row of C * (W + 2) floats with its two halo rows: 141 KiB, within an H100's opt-in shared memory and
    beyond an RTX 4090's (99 KiB), where phi_blend refuses before launching."""
    h, weight, bias = _phi_inputs(1, 4, 2, 3000, seed=60)
    expected = torch.ops.var_fast.phi_blend(h, weight, bias, 0.5)
    with emulated_gpu.recorded_launches() as launches:
        torch.testing.assert_close(ops.phi_blend(h, weight, bias, 0.5), expected, rtol=1e-5, atol=1e-5)
    assert _phi_tile_rows(emulated_gpu.launches_of(launches, "phi_tile_kernel")[0], 4, 3000) == 1
    emulated_gpu.set_device(emulated_gpu.BY_NAME["rtx4090"])
    with emulated_gpu.recorded_launches() as launches:
        with pytest.raises(RuntimeError, match="floats per row is too large for shared memory"):
            ops.phi_blend(h, weight, bias, 0.5)
    assert launches == []


@pytest.mark.emu
@pytest.mark.parametrize("gpu,splits", [("l4", 1), ("h100", 2)])
def test_nearest_code_split_follows_the_sm_count(emulated_gpu, gpu, splits):
    """120 row tiles of 64 rows against 2 code tiles: enough blocks for a 58-SM GPU in one split, split in two
    on an H100 (132 SMs, about two blocks per SM); the tokens are the reference's either way."""
    g = _rng(70)
    z, codebook = torch.randn(120 * 64, 8, generator=g), torch.randn(128, 8, generator=g)
    emulated_gpu.set_device(emulated_gpu.BY_NAME[gpu])
    with emulated_gpu.recorded_launches() as launches:
        got = ops.nearest_code(z, codebook)
    (partial,) = emulated_gpu.launches_of(launches, "nearest_code_partial_kernel")
    assert partial.grid == (120, splits, 1)
    assert torch.equal(got, ref.nearest_code(z, codebook))


# ---- CUDA graph capture on the emulated GPU ---------------------------------------------------------------------
@pytest.mark.emu
@pytest.mark.parametrize("pn", [3, 8], ids=["upsampled", "direct"])
def test_quant_sampler_step_with_status_never_waits_under_capture(emulated_gpu, pn):
    """With a status word the step neither reads the device nor waits for it (the emulated capture fails on
    either), and flags out-of-range tokens there."""
    cb, w, b, bad, _ = _status_case("cpu", pn)
    status, f_hat = ops.new_status("cpu"), torch.zeros(2, 4, 8, 8)
    f_plain = f_hat.clone()
    good = bad.clamp(0, 15)
    with emulated_gpu.emulated_capture():
        got = ops.quant_sampler_step(good, cb, f_hat, w, b, 0.5, 3, status=status)
        ops.quant_sampler_step(bad, cb, f_hat.clone(), w, b, 0.5, 0, status=status)
    assert torch.equal(got, ops.quant_sampler_step(good, cb, f_plain, w, b, 0.5, 3)) and torch.equal(f_hat, f_plain)
    with pytest.raises(RuntimeError, match="token out of range"):
        ops.check_status(status, 16)


@pytest.mark.emu
def test_quant_ops_refuse_capture_when_they_must_wait(emulated_gpu):
    """Without a status word the sampler step would range-check the tokens on the host; nearest_code and
    quant_encode wait for the device by design: under capture each refuses with a clear error, before any
    work."""
    cb, w, b, _, tokens = _status_case("cpu", 3)
    f_hat = torch.zeros(2, 4, 8, 8)
    with emulated_gpu.emulated_capture():
        with emulated_gpu.recorded_launches() as launches:
            with pytest.raises(RuntimeError, match="quant_sampler_step: under CUDA graph capture, pass a status tensor"):
                ops.quant_sampler_step(tokens, cb, f_hat, w, b, 0.5, 3)
            with pytest.raises(RuntimeError, match="nearest_code: cannot run under CUDA graph capture"):
                ops.nearest_code(torch.randn(5, 4), cb)
            with pytest.raises(RuntimeError, match="quant_encode: cannot run under CUDA graph capture"):
                ops.quant_encode(torch.randn(1, 4, 8, 8), cb, w[None], b[None], [0, 0], 0.5, [2, 8])
    assert launches == [] and not f_hat.any()


@pytest.mark.emu
def test_emulated_capture_catches_a_host_wait(emulated_gpu):
    """The capture check itself: the launcher's host range check (what the step does without a status word,
    outside capture) is a synchronisation the emulated capture reports."""
    with pytest.raises(RuntimeError, match="host synchronisation: aten::_local_scalar_dense"):
        with emulated_gpu.emulated_capture():
            torch.ops.var_fast_emu.check_status(ops.new_status("cpu"), 16)


# ---- opcheck -------------------------------------------------------------------------------------------------
def _opcheck_cases(device, library):
    g = _rng(17)
    C, V = 8, 32
    cb = torch.randn(V, C, generator=g).to(device)
    w = (torch.randn(C, C, 3, 3, generator=g) * 0.1).to(device)
    b = torch.randn(C, generator=g).to(device)
    return [
        (library.nearest_code.default, (torch.randn(10, C, generator=g).to(device), cb)),
        (library.area_downsample.default, (torch.randn(2, C, 16, 16, generator=g).to(device), 5)),
        (library.bicubic_upsample.default, (torch.randn(2, C, 3, 3, generator=g).to(device), 16)),
        (library.phi_blend.default, (torch.randn(2, C, 8, 8, generator=g).to(device), w, b, 0.5)),
        (library.quant_sampler_step.default,
         (torch.randint(0, V, (2, 9), generator=g).to(device), cb, torch.zeros(2, C, 8, 8, device=device), w, b, 0.5,
          4)),
        (library.quant_sampler_step.default,
         (torch.randint(0, V, (2, 64), generator=g).to(device), cb, torch.zeros(2, C, 8, 8, device=device), w, b, 0.5,
          0)),
        (library.quant_sampler_step.default,
         (torch.randint(0, V, (2, 9), generator=g).to(device), cb, torch.zeros(2, C, 8, 8, device=device), w, b, 0.5,
          4, torch.zeros(1, dtype=torch.int32, device=device))),
        (library.quant_encode.default,
         (torch.randn(2, C, 8, 8, generator=g).to(device), cb, w[None].repeat(2, 1, 1, 1, 1), b[None].repeat(2, 1),
          [0, 0, 1, 1], 0.5, [1, 2, 4, 8])),
    ]


@pytest.mark.parametrize("case", range(8))
def test_opcheck(device, device_name, case):
    if device_name == "emu":  # the emulated library has no fake kernels: its schemas and autograd registration
        op, args = _opcheck_cases(device, torch.ops.var_fast_emu)[case]
        torch.library.opcheck(op, args, test_utils=("test_schema", "test_autograd_registration"))
    else:
        op, args = _opcheck_cases(device, torch.ops.var_fast)[case]
        torch.library.opcheck(op, args)

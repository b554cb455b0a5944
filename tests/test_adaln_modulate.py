"""adaln_modulate: LayerNorm(x) (no affine, float32 statistics) * (1 + scale) + shift."""
import contextlib

import pytest
import torch

from conftest import HAS_CUDA, tol
from var_fast import ops
from var_fast.native.extension import require
from var_fast.reference import attention as ref

SHAPES = [(1, 1, 64), (3, 5, 192), (1, 169, 64), (3, 169, 192), (2, 13, 64)]  # (B, L, C)


def _randn(*shape, seed, dtype=torch.float32, device="cpu", std=1.0, mean=0.0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=gen) * std + mean).to(device=device, dtype=dtype)


def _modulation(B, C, seed, dtype, device):
    """The six (B, 1, C) AdaLN vectors as the model makes them: non-contiguous views from unbind(2)."""
    return _randn(B, 1, 6, C, seed=seed, dtype=dtype, device=device, std=0.5).unbind(2)


def _cpu_op(x, scale, shift, eps=1e-6):
    """The CPU op itself (``ops`` may be routed to the emulated CUDA kernels)."""
    require()
    return torch.ops.var_fast.adaln_modulate(x.cpu(), scale.cpu(), shift.cpu(), eps)


def _expected(x, scale, shift, eps=1e-6):
    """The reference on float32 copies, rounded once to x's dtype (what the op promises)."""
    return ref.adaln_modulate(x.float(), scale.float(), shift.float(), eps).to(x.dtype)


@pytest.mark.parametrize("B,L,C", SHAPES)
def test_matches_reference(device, device_name, dtype, B, L, C):
    x = _randn(B, L, C, seed=1, dtype=dtype, device=device, std=2.0, mean=0.5)
    _, _, scale, _, shift, _ = _modulation(B, C, seed=2, dtype=dtype, device=device)
    assert B == 1 or not (scale.is_contiguous() or shift.is_contiguous())  # B = 1 views count as contiguous
    out = ops.adaln_modulate(x, scale, shift)
    assert out.shape == (B, L, C) and out.dtype == dtype and out.device == x.device
    torch.testing.assert_close(out, _expected(x, scale, shift), **tol(dtype))
    # The upstream arithmetic in the same dtype (rounding after each op) agrees up to that rounding.
    rtol, atol = tol(dtype).values()
    torch.testing.assert_close(out, ref.adaln_modulate(x, scale, shift), rtol=2 * rtol, atol=2 * atol)
    if device_name != "cpu":
        torch.testing.assert_close(out.cpu(), _cpu_op(x, scale, shift), **tol(dtype))


def _unaligned(t):
    """t's values in memory starting one element past a 16-byte boundary (contiguous, so read in place)."""
    flat = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
    view = flat[1:].view(t.shape)
    view.copy_(t)
    return view


# Which kernel variant a case takes: 16-byte packs need C a multiple of the pack (8 halves, 4 floats),
# 16-byte aligned x / scale / shift / y, and per-batch modulation strides that keep the alignment.
KERNEL_PATH_CASES = [  # (B, L, C, layout, vectorized)
    pytest.param(2, 169, 1024, "unbind", True, id="vectorized-VAR-d16-13x13"),
    pytest.param(3, 7, 200, "unbind", True, id="vectorized-C200"),
    pytest.param(2, 5, 101, "unbind", False, id="scalar-odd-C"),
    pytest.param(3, 4, 64, "unaligned-x", False, id="scalar-unaligned-x"),
    pytest.param(3, 4, 64, "unaligned-scale", False, id="scalar-unaligned-scale"),
    pytest.param(3, 4, 64, "odd-stride", False, id="scalar-odd-modulation-stride"),
    pytest.param(1, 1, 1, "unbind", False, id="scalar-L1-C1"),
]
KERNEL_TYPE = {torch.float32: "float", torch.float16: "c10::Half", torch.bfloat16: "c10::BFloat16"}
PACK = {torch.float32: 4, torch.float16: 8, torch.bfloat16: 8}  # elements per 16 bytes


@pytest.mark.parametrize("B,L,C,layout,vectorized", KERNEL_PATH_CASES)
def test_kernel_paths_match_cpu_op(request, kernel_device, device_name, dtype, B, L, C, layout, vectorized):
    x = _randn(B, L, C, seed=20, dtype=dtype, device=kernel_device, std=2.0, mean=0.5)
    _, _, scale, _, shift, _ = _modulation(B, C, seed=21, dtype=dtype, device=kernel_device)
    if layout == "unaligned-x":
        x = _unaligned(x)
    elif layout == "unaligned-scale":
        scale = _unaligned(scale)
    elif layout == "odd-stride":  # (B, 1, C) rows C + 1 elements apart
        scale = _randn(B, 1, C + 1, seed=22, dtype=dtype, device=kernel_device, std=0.5)[..., :C]
        shift = _randn(B, 1, C + 1, seed=23, dtype=dtype, device=kernel_device, std=0.5)[..., 1:]
    emu = device_name == "emu"
    with (request.getfixturevalue("emulated_gpu").recorded_launches() if emu else contextlib.nullcontext([])) as launches:
        out = ops.adaln_modulate(x, scale, shift)
    if emu:  # the variant the launch plan chose
        assert [launch.name for launch in launches] == \
            [f"adaln_modulate_kernel<{KERNEL_TYPE[dtype]}, {PACK[dtype] if vectorized else 1}>"]
    assert out.shape == (B, L, C) and out.dtype == dtype
    torch.testing.assert_close(out, _expected(x, scale, shift), **tol(dtype))
    torch.testing.assert_close(out.cpu(), _cpu_op(x, scale, shift), **tol(dtype))


@pytest.mark.emu
def test_emulated_capture(emulated_gpu):
    """Captured in every scale's CUDA graph: under an emulated capture (which fails on a device read or a host
    synchronisation) the op runs and gives the eager result."""
    x = _randn(2, 13, 64, seed=24, dtype=torch.float16)
    _, _, scale, _, shift, _ = _modulation(2, 64, seed=25, dtype=torch.float16, device="cpu")
    eager = ops.adaln_modulate(x, scale, shift)
    with emulated_gpu.emulated_capture():
        captured = ops.adaln_modulate(x, scale, shift)
    assert torch.equal(captured, eager)


def test_noncontiguous_x_and_contiguous_modulation(device, dtype):
    B, L, C = 3, 13, 192
    x = _randn(B, C, L, seed=3, dtype=dtype, device=device).transpose(1, 2)
    scale = _randn(B, 1, C, seed=4, dtype=dtype, device=device, std=0.5)
    shift = _randn(B, 1, C, seed=5, dtype=dtype, device=device, std=0.5)
    assert not x.is_contiguous()
    out = ops.adaln_modulate(x, scale, shift)
    assert out.is_contiguous()
    torch.testing.assert_close(out, _expected(x, scale, shift), **tol(dtype))


def test_rows_with_a_large_mean(device):
    # E[x^2] - E[x]^2 in float32 loses the variance of these rows; centred statistics keep it.
    B, L, C = 2, 7, 192
    x = _randn(B, L, C, seed=6, device=device, mean=1000.0)
    _, _, scale, _, shift, _ = _modulation(B, C, seed=7, dtype=torch.float32, device=device)
    out = ops.adaln_modulate(x, scale, shift)
    expected = ref.adaln_modulate(x.double(), scale.double(), shift.double()).float()
    torch.testing.assert_close(out, expected, rtol=3e-4, atol=1e-3)


def test_constant_rows_give_shift(device, dtype):
    B, L, C = 3, 5, 64
    x = torch.full((B, L, C), 0.75, dtype=dtype, device=device)
    _, _, scale, _, shift, _ = _modulation(B, C, seed=8, dtype=dtype, device=device)
    out = ops.adaln_modulate(x, scale, shift)
    torch.testing.assert_close(out, shift.expand(B, L, C), rtol=0, atol=0)


def test_eps_is_applied(device):
    B, L, C = 2, 3, 8
    x = _randn(B, L, C, seed=9, device=device, std=0.3)
    _, _, scale, _, shift, _ = _modulation(B, C, seed=10, dtype=torch.float32, device=device)
    out = ops.adaln_modulate(x, scale, shift, eps=0.5)
    torch.testing.assert_close(out, _expected(x, scale, shift, eps=0.5), rtol=3e-4, atol=1e-5)
    assert (out - _expected(x, scale, shift, eps=1e-6)).abs().max() > 0.1


def test_per_batch_modulation(device):
    # Each batch row uses its own scale/shift: swapping the batch of x swaps the outputs.
    B, L, C = 3, 4, 64
    x = _randn(1, L, C, seed=11, device=device).expand(B, L, C)
    _, _, scale, _, shift, _ = _modulation(B, C, seed=12, dtype=torch.float32, device=device)
    out = ops.adaln_modulate(x, scale, shift)
    for b in range(B):
        torch.testing.assert_close(out[b:b + 1], _expected(x[b:b + 1], scale[b:b + 1], shift[b:b + 1]))


def test_empty(device):
    x = torch.empty(2, 0, 64, device=device)
    scale = torch.zeros(2, 1, 64, device=device)
    out = ops.adaln_modulate(x, scale, scale)
    assert out.shape == (2, 0, 64)


def _good(device="cpu"):
    return (_randn(3, 5, 64, seed=13, device=device), _randn(3, 1, 64, seed=14, device=device),
            _randn(3, 1, 64, seed=15, device=device))


@pytest.mark.parametrize("change,message", [
    (lambda x, s, h: (x[0], s, h), r"x must be 3-D"),
    (lambda x, s, h: (x.int(), s.int(), h.int()), r"x must be float32, float16 or bfloat16"),
    (lambda x, s, h: (x, s.half(), h), r"scale and x must have the same dtype"),
    (lambda x, s, h: (x, s, h.double()), r"shift and x must have the same dtype"),
    (lambda x, s, h: (x, s[:1], h), r"scale must have shape \(B, 1, C\) = \(3, 1, 64\)"),
    (lambda x, s, h: (x, s.expand(3, 2, 64), h), r"scale must have shape"),
    (lambda x, s, h: (x, s, h[..., :32]), r"shift must have shape \(B, 1, C\)"),
    (lambda x, s, h: (x, s[:, 0], h), r"scale must have shape"),
])
def test_errors(change, message):
    with pytest.raises(RuntimeError, match=message):
        ops.adaln_modulate(*change(*_good()))


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_device_mismatch():
    x, scale, shift = _good()
    with pytest.raises(RuntimeError, match=r"scale must be on"):
        ops.adaln_modulate(x.cuda(), scale, shift.cuda())


def test_opcheck(device, device_name):
    if device_name == "emu":
        pytest.skip("opcheck of var_fast_emu ops fails test_faketensor: fake kernels are registered for var_fast:: only")
    x = _randn(3, 5, 64, seed=16, device=device)
    _, _, scale, _, shift, _ = _modulation(3, 64, seed=17, dtype=torch.float32, device=device)
    torch.library.opcheck(torch.ops.var_fast.adaln_modulate.default, (x, scale, shift, 1e-6))

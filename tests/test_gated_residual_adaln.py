"""gated_residual_adaln: gated_residual then adaln_modulate on its result, one op (one launch on CUDA)."""
import pytest
import torch

from conftest import HAS_CUDA, tol
from var_fast import ops
from var_fast.native.extension import require
from var_fast.reference import attention as ref

SHAPES = [(1, 1, 64), (3, 5, 192), (1, 169, 64), (3, 169, 192), (2, 13, 100), (2, 3, 13)]  # (B, L, C)


def _randn(*shape, seed, dtype=torch.float32, device="cpu", std=1.0, mean=0.0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=gen) * std + mean).to(device=device, dtype=dtype)


def _inputs(B, L, C, seed, dtype, device):
    """x, y and the modulation as the fast loop passes them: gamma1 / scale2 / shift2 are (B, 1, C)
    views from unbind(2) of one (B, 1, 6, C) tensor."""
    x = _randn(B, L, C, seed=seed, dtype=dtype, device=device, std=2.0, mean=0.5)
    y = _randn(B, L, C, seed=seed + 1, dtype=dtype, device=device)
    gamma, _, _, scale, _, shift = _randn(B, 1, 6, C, seed=seed + 2, dtype=dtype, device=device, std=0.5).unbind(2)
    return x, y, gamma, scale, shift


def _cpu_op(*args, eps=1e-6):
    """The CPU op itself (``ops`` may be routed to the emulated CUDA kernels)."""
    require()
    return torch.ops.var_fast.gated_residual_adaln(*[a.cpu() for a in args], eps)


@pytest.mark.parametrize("B,L,C", SHAPES)
def test_equals_the_two_ops(device, dtype, B, L, C):
    """Bit for bit gated_residual followed by adaln_modulate (on the same device): the fast loop's
    values do not change when the two launches become one."""
    x, y, gamma, scale, shift = _inputs(B, L, C, seed=1, dtype=dtype, device=device)
    out, h = ops.gated_residual_adaln(x, y, gamma, scale, shift, 1e-6)
    assert out.shape == h.shape == (B, L, C) and out.dtype == h.dtype == dtype
    want_out = ops.gated_residual(x, y, gamma)
    assert torch.equal(out, want_out)
    assert torch.equal(h, ops.adaln_modulate(want_out, scale, shift, 1e-6))


@pytest.mark.parametrize("B,L,C", SHAPES)
def test_matches_reference(device, device_name, dtype, B, L, C):
    x, y, gamma, scale, shift = _inputs(B, L, C, seed=4, dtype=dtype, device=device)
    out, h = ops.gated_residual_adaln(x, y, gamma, scale, shift)
    f = [t.float() for t in (x, y, gamma, scale, shift)]
    want_out = ref.gated_residual(*f[:3]).to(dtype)
    torch.testing.assert_close(out, want_out, **tol(dtype))
    torch.testing.assert_close(h, ref.adaln_modulate(want_out.float(), f[3], f[4]).to(dtype), **tol(dtype))
    if device_name != "cpu":
        cpu_out, cpu_h = _cpu_op(x, y, gamma, scale, shift)
        torch.testing.assert_close(out.cpu(), cpu_out, **tol(dtype))
        torch.testing.assert_close(h.cpu(), cpu_h, **tol(dtype))


def _unaligned(t):
    """t's values in memory starting one element past a 16-byte boundary (contiguous, so read in place)."""
    flat = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
    view = flat[1:].view(t.shape)
    view.copy_(t)
    return view


# Which kernel variant a case takes: 16-byte packs need C a multiple of the pack (8 halves, 4 floats),
# every pointer 16-byte aligned, and per-batch modulation strides that keep the alignment.
KERNEL_PATH_CASES = [
    pytest.param(2, 169, 1024, "unbind", id="vectorized-VAR-d16-13x13"),
    pytest.param(3, 7, 200, "unbind", id="vectorized-C200"),
    pytest.param(2, 5, 101, "unbind", id="scalar-odd-C"),
    pytest.param(3, 4, 64, "unaligned-y", id="scalar-unaligned-y"),
    pytest.param(3, 4, 64, "unaligned-gamma", id="scalar-unaligned-gamma"),
    pytest.param(3, 4, 64, "odd-stride", id="scalar-odd-modulation-stride"),
    pytest.param(1, 1, 1, "unbind", id="scalar-L1-C1"),
]


@pytest.mark.parametrize("B,L,C,layout", KERNEL_PATH_CASES)
def test_kernel_paths_match_cpu_op(kernel_device, dtype, B, L, C, layout):
    x, y, gamma, scale, shift = _inputs(B, L, C, seed=20, dtype=dtype, device=kernel_device)
    if layout == "unaligned-y":
        y = _unaligned(y)
    elif layout == "unaligned-gamma":
        gamma = _unaligned(gamma)
    elif layout == "odd-stride":  # (B, 1, C) rows C + 1 elements apart
        shift = _randn(B, 1, C + 1, seed=23, dtype=dtype, device=kernel_device, std=0.5)[..., 1:]
    out, h = ops.gated_residual_adaln(x, y, gamma, scale, shift)
    cpu_out, cpu_h = _cpu_op(x, y, gamma, scale, shift)
    torch.testing.assert_close(out.cpu(), cpu_out, **tol(dtype))
    torch.testing.assert_close(h.cpu(), cpu_h, **tol(dtype))


def test_noncontiguous_inputs(device, dtype):
    B, L, C = 3, 13, 64
    x = _randn(B, C, L, seed=4, dtype=dtype, device=device).transpose(1, 2)
    y = _randn(B, L, 2 * C, seed=5, dtype=dtype, device=device)[..., ::2]
    gamma, scale, shift = _randn(B, 1, 2 * C, 3, seed=6, dtype=dtype, device=device)[:, :, 1::2].unbind(3)
    assert not any(t.is_contiguous() for t in (x, y, gamma, scale, shift))
    out, h = ops.gated_residual_adaln(x, y, gamma, scale, shift)
    assert out.is_contiguous() and h.is_contiguous()
    want_out = ops.gated_residual(x.contiguous(), y.contiguous(), gamma.contiguous())
    torch.testing.assert_close(out, want_out, **tol(dtype))
    torch.testing.assert_close(h, ops.adaln_modulate(want_out, scale.contiguous(), shift.contiguous()), **tol(dtype))


def test_eps_is_used(device):
    """A constant row has variance 0: h = shift + (out - mean) * rsqrt(eps) * ... = shift exactly."""
    B, L, C = 1, 2, 64
    x = torch.full((B, L, C), 3.0, device=device)
    y = torch.ones(B, L, C, device=device)
    gamma = torch.full((B, 1, C), 0.5, device=device)
    shift = _randn(B, 1, C, seed=8, device=device)
    out, h = ops.gated_residual_adaln(x, y, gamma, torch.zeros(B, 1, C, device=device), shift, 1e-5)
    assert torch.equal(out, torch.full_like(x, 3.5))
    assert torch.equal(h, shift.expand(B, L, C))


def test_empty(device):
    x = torch.empty(2, 0, 64, device=device)
    m = torch.ones(2, 1, 64, device=device)
    out, h = ops.gated_residual_adaln(x, x, m, m, m)
    assert out.shape == h.shape == (2, 0, 64)


def _good(device="cpu"):
    return _inputs(3, 5, 64, seed=9, dtype=torch.float32, device=device)


@pytest.mark.parametrize("change,message", [
    (lambda x, y, g, sc, sh: (x[0], y[0], g, sc, sh), r"x must be 3-D"),
    (lambda x, y, g, sc, sh: (x, y[:, :4], g, sc, sh), r"y must have the shape of x"),
    (lambda x, y, g, sc, sh: (x, y.half(), g, sc, sh), r"y and x must have the same dtype"),
    (lambda x, y, g, sc, sh: (x, y, g[:1], sc, sh), r"gamma must have shape \(B, 1, C\) = \(3, 1, 64\)"),
    (lambda x, y, g, sc, sh: (x, y, g, sc.bfloat16(), sh), r"scale and x must have the same dtype"),
    (lambda x, y, g, sc, sh: (x, y, g, sc, sh[..., :32]), r"shift must have shape \(B, 1, C\) = \(3, 1, 64\)"),
    (lambda x, y, g, sc, sh: (x.long(), y.long(), g.long(), sc.long(), sh.long()),
     r"x must be float32, float16 or bfloat16"),
])
def test_errors(change, message):
    with pytest.raises(RuntimeError, match=message):
        ops.gated_residual_adaln(*change(*_good()))


def test_negative_eps():
    with pytest.raises(RuntimeError, match=r"eps must be >= 0"):
        ops.gated_residual_adaln(*_good(), -1.0)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_device_mismatch():
    x, y, gamma, scale, shift = _good()
    with pytest.raises(RuntimeError, match=r"y must be on"):
        ops.gated_residual_adaln(x.cuda(), y, gamma.cuda(), scale.cuda(), shift.cuda())


def test_opcheck(device, device_name):
    if device_name == "emu":
        pytest.skip("opcheck of var_fast_emu ops fails test_faketensor: fake kernels are registered for var_fast:: only")
    torch.library.opcheck(torch.ops.var_fast.gated_residual_adaln.default, (*_good(device), 1e-6))

"""gated_residual: x + gamma * y with gamma (B, 1, C), float32 arithmetic, output in x's dtype."""
import pytest
import torch

from conftest import HAS_CUDA, tol
from var_fast import ops
from var_fast.native.extension import require
from var_fast.reference import attention as ref

SHAPES = [(1, 1, 64), (3, 5, 192), (1, 169, 64), (3, 169, 192), (2, 13, 100)]  # (B, L, C)


def _randn(*shape, seed, dtype=torch.float32, device="cpu", std=1.0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=gen) * std).to(device=device, dtype=dtype)


def _gammas(B, C, seed, dtype, device):
    """gamma1, gamma2 as the model makes them: non-contiguous (B, 1, C) views from unbind(2)."""
    return _randn(B, 1, 6, C, seed=seed, dtype=dtype, device=device).unbind(2)[:2]


def _cpu_op(x, y, gamma):
    """The CPU op itself (``ops`` may be routed to the emulated CUDA kernels)."""
    require()
    return torch.ops.var_fast.gated_residual(x.cpu(), y.cpu(), gamma.cpu())


def _unaligned(t):
    """t's values in memory starting one element past a 16-byte boundary (contiguous, so read in place)."""
    flat = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
    view = flat[1:].view(t.shape)
    view.copy_(t)
    return view


def _expected(x, y, gamma):
    return ref.gated_residual(x.float(), y.float(), gamma.float()).to(x.dtype)


@pytest.mark.parametrize("B,L,C", SHAPES)
def test_matches_reference(device, device_name, dtype, B, L, C):
    x = _randn(B, L, C, seed=1, dtype=dtype, device=device, std=3.0)
    y = _randn(B, L, C, seed=2, dtype=dtype, device=device)
    gamma1, gamma2 = _gammas(B, C, seed=3, dtype=dtype, device=device)
    assert B == 1 or not gamma2.is_contiguous()  # B = 1 views count as contiguous
    for gamma in (gamma1, gamma2):
        out = ops.gated_residual(x, y, gamma)
        assert out.shape == (B, L, C) and out.dtype == dtype and out.device == x.device
        torch.testing.assert_close(out, _expected(x, y, gamma), **tol(dtype))
        rtol, atol = tol(dtype).values()  # the upstream rounding (y * gamma rounded, then the sum)
        torch.testing.assert_close(out, ref.gated_residual(x, y, gamma), rtol=2 * rtol, atol=2 * atol)
        if device_name != "cpu":
            torch.testing.assert_close(out.cpu(), _cpu_op(x, y, gamma), **tol(dtype))


# Which kernel variant a case takes: 16-byte packs need C a multiple of the pack (8 halves, 4 floats),
# 16-byte aligned x / y / gamma / out, and a per-batch gamma stride that keeps the alignment.
KERNEL_PATH_CASES = [
    pytest.param(2, 169, 1024, "unbind", id="vectorized-VAR-d16-13x13"),
    pytest.param(3, 7, 200, "unbind", id="vectorized-C200"),
    pytest.param(2, 5, 101, "unbind", id="scalar-odd-C"),
    pytest.param(3, 4, 64, "unaligned-x", id="scalar-unaligned-x"),
    pytest.param(3, 4, 64, "unaligned-y", id="scalar-unaligned-y"),
    pytest.param(3, 4, 64, "odd-stride", id="scalar-odd-gamma-stride"),
    pytest.param(1, 1, 1, "unbind", id="scalar-L1-C1"),
    # C one past a whole number of packs (9 = 8 + 1 halves, 2 * 4 + 1 floats) with everything aligned:
    # the C % pack test alone keeps these scalar (B = 1, and B = 2 with a 16-element gamma stride).
    pytest.param(1, 3, 9, "fresh-gamma", id="scalar-C-one-past-packs"),
    pytest.param(2, 3, 9, "padded-gamma", id="scalar-C-one-past-packs-B2"),
]


@pytest.mark.parametrize("B,L,C,layout", KERNEL_PATH_CASES)
def test_kernel_paths_match_cpu_op(kernel_device, dtype, B, L, C, layout):
    """Both variants of gated_residual_kernel (adaln_launch.h gated_residual_vectorized: 16-byte packs or
    scalar), each case on the side of the choice its id names, against the reference and the CPU op."""
    x = _randn(B, L, C, seed=20, dtype=dtype, device=kernel_device, std=3.0)
    y = _randn(B, L, C, seed=21, dtype=dtype, device=kernel_device)
    gamma = _gammas(B, C, seed=22, dtype=dtype, device=kernel_device)[1]
    if layout == "unaligned-x":
        x = _unaligned(x)
    elif layout == "unaligned-y":
        y = _unaligned(y)
    elif layout == "odd-stride":  # (B, 1, C) rows C + 1 elements apart
        gamma = _randn(B, 1, C + 1, seed=23, dtype=dtype, device=kernel_device)[..., 1:]
    elif layout == "fresh-gamma":  # contiguous, 16-byte aligned
        gamma = _randn(B, 1, C, seed=24, dtype=dtype, device=kernel_device)
    elif layout == "padded-gamma":  # aligned rows 16 elements apart (a stride that keeps 16-byte packs)
        gamma = _randn(B, 1, 16, seed=25, dtype=dtype, device=kernel_device)[..., :C]
    out = ops.gated_residual(x, y, gamma)
    assert out.shape == (B, L, C) and out.dtype == dtype
    torch.testing.assert_close(out, _expected(x, y, gamma), **tol(dtype))
    torch.testing.assert_close(out.cpu(), _cpu_op(x, y, gamma), **tol(dtype))


def test_noncontiguous_inputs(device, dtype):
    B, L, C = 3, 13, 64
    x = _randn(B, C, L, seed=4, dtype=dtype, device=device).transpose(1, 2)
    y = _randn(B, L, 2 * C, seed=5, dtype=dtype, device=device)[..., ::2]
    gamma = _randn(B, 1, 2 * C, seed=6, dtype=dtype, device=device)[..., 1::2]
    assert not (x.is_contiguous() or y.is_contiguous() or gamma.is_contiguous())
    out = ops.gated_residual(x, y, gamma)
    assert out.is_contiguous()
    torch.testing.assert_close(out, _expected(x, y, gamma), **tol(dtype))


def test_single_rounding(device):
    # gamma * y = 2^-8 (1 + 2^-8 - 2^-11) rounds to 2^-8 in bfloat16, and 1 + 2^-8 then ties to 1
    # (the upstream double rounding); rounding x + gamma * y once gives 1 + 2^-7.
    B, L, C = 1, 2, 64
    x = torch.ones(B, L, C, dtype=torch.bfloat16, device=device)
    y = torch.full((B, L, C), 1 + 2.0 ** -4 + 2.0 ** -7, dtype=torch.bfloat16, device=device)
    gamma = torch.full((B, 1, C), 2.0 ** -8 * (1 - 2.0 ** -4), dtype=torch.bfloat16, device=device)
    assert torch.equal(ref.gated_residual(x, y, gamma), x)
    assert torch.equal(ops.gated_residual(x, y, gamma), torch.full_like(x, 1 + 2.0 ** -7))


def test_zero_gamma_is_identity(device, dtype):
    x = _randn(3, 5, 64, seed=7, dtype=dtype, device=device)
    y = _randn(3, 5, 64, seed=8, dtype=dtype, device=device)
    out = ops.gated_residual(x, y, torch.zeros(3, 1, 64, dtype=dtype, device=device))
    assert torch.equal(out, x)


def test_empty(device):
    x = torch.empty(2, 0, 64, device=device)
    assert ops.gated_residual(x, x, torch.ones(2, 1, 64, device=device)).shape == (2, 0, 64)


def _good(device="cpu"):
    return (_randn(3, 5, 64, seed=9, device=device), _randn(3, 5, 64, seed=10, device=device),
            _randn(3, 1, 64, seed=11, device=device))


@pytest.mark.parametrize("change,message", [
    (lambda x, y, g: (x[0], y[0], g), r"x must be 3-D"),
    (lambda x, y, g: (x.long(), y.long(), g.long()), r"x must be float32, float16 or bfloat16"),
    (lambda x, y, g: (x, y[:, :4], g), r"y must have the shape of x"),
    (lambda x, y, g: (x, y.half(), g), r"y and x must have the same dtype"),
    (lambda x, y, g: (x, y, g.bfloat16()), r"gamma and x must have the same dtype"),
    (lambda x, y, g: (x, y, g[:1]), r"gamma must have shape \(B, 1, C\) = \(3, 1, 64\)"),
    (lambda x, y, g: (x, y, g.expand(3, 5, 64)), r"gamma must have shape"),
    (lambda x, y, g: (x, y, g[0]), r"gamma must have shape"),
])
def test_errors(change, message):
    with pytest.raises(RuntimeError, match=message):
        ops.gated_residual(*change(*_good()))


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_device_mismatch():
    x, y, gamma = _good()
    with pytest.raises(RuntimeError, match=r"y must be on"):
        ops.gated_residual(x.cuda(), y, gamma.cuda())


def test_opcheck(device, device_name):
    if device_name == "emu":
        pytest.skip("opcheck of var_fast_emu ops fails test_faketensor: fake kernels are registered for var_fast:: only")
    x, y, _ = _good(device)
    gamma = _gammas(3, 64, seed=12, dtype=torch.float32, device=device)[1]
    torch.library.opcheck(torch.ops.var_fast.gated_residual.default, (x, y, gamma))

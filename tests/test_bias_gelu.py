"""bias_gelu: GELU(x + bias), tanh approximation: fc1's epilogue after a bias-free GEMM (one launch on CUDA)."""
import pytest
import torch
import torch.nn.functional as F

from conftest import HAS_CUDA, tol
from var_fast import ops
from var_fast.native.extension import require
from var_fast.reference import attention as ref

SHAPES = [(1, 1, 64), (3, 5, 256), (2, 169, 128), (2, 7, 13)]  # (B, L, N)


def _randn(*shape, seed, dtype=torch.float32, device="cpu", std=1.0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=gen) * std).to(device=device, dtype=dtype)


def _cpu_op(x, bias):
    """The CPU op itself (``ops`` may be routed to the emulated CUDA kernels)."""
    require()
    return torch.ops.var_fast.bias_gelu(x.cpu(), bias.cpu())


@pytest.mark.parametrize("B,L,N", SHAPES)
def test_matches_reference(device, device_name, dtype, B, L, N):
    x = _randn(B, L, N, seed=1, dtype=dtype, device=device, std=2.0)
    bias = _randn(N, seed=2, dtype=dtype, device=device)
    out = ops.bias_gelu(x, bias)
    assert out.shape == x.shape and out.dtype == dtype
    want = ref.bias_gelu(x, bias)
    if device_name == "cpu":  # the CPU op is the unfused reference: bit for bit
        assert torch.equal(out, want)
    else:  # the kernel's tanhf against ATen's vectorized tanh: a few float32 ulps, then the dtype's rounding
        torch.testing.assert_close(out, want, **tol(dtype))
        torch.testing.assert_close(out.cpu(), _cpu_op(x, bias), **tol(dtype))


def test_is_fc1_then_tanh_gelu(device):
    """fc1 split after its bias-free GEMM: bias_gelu(x W^T, b) is FFN's act(fc1(x)) (float32)."""
    x = _randn(2, 9, 32, seed=3, device=device)
    w = _randn(128, 32, seed=4, device=device, std=0.2)
    b = _randn(128, seed=5, device=device)
    want = F.gelu(F.linear(x, w, b), approximate="tanh")
    got = ops.bias_gelu(F.linear(x, w), b)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    assert (got - F.gelu(F.linear(x, w, b))).abs().max() > 1e-6  # the tanh form, not the erf one


def _unaligned(t):
    flat = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
    view = flat[1:].view(t.shape)
    view.copy_(t)
    return view


KERNEL_PATH_CASES = [
    pytest.param(2, 169, 4096, "plain", id="vectorized-VAR-d16-fc1-13x13"),
    pytest.param(3, 7, 200, "plain", id="vectorized-N200"),
    pytest.param(2, 5, 101, "plain", id="scalar-odd-N"),
    pytest.param(3, 4, 64, "unaligned-x", id="scalar-unaligned-x"),
    pytest.param(3, 4, 64, "unaligned-bias", id="scalar-unaligned-bias"),
    pytest.param(1, 1, 1, "plain", id="scalar-N1"),
]


@pytest.mark.parametrize("B,L,N,layout", KERNEL_PATH_CASES)
def test_kernel_paths_match_cpu_op(kernel_device, dtype, B, L, N, layout):
    x = _randn(B, L, N, seed=20, dtype=dtype, device=kernel_device, std=3.0)
    bias = _randn(N, seed=21, dtype=dtype, device=kernel_device)
    if layout == "unaligned-x":
        x = _unaligned(x)
    elif layout == "unaligned-bias":
        bias = _unaligned(bias)
    out = ops.bias_gelu(x, bias)
    torch.testing.assert_close(out.cpu(), _cpu_op(x, bias), **tol(dtype))


def test_noncontiguous_input(device, dtype):
    x = _randn(3, 64, 5, seed=6, dtype=dtype, device=device).transpose(1, 2)
    bias = _randn(128, seed=7, dtype=dtype, device=device)[::2]
    out = ops.bias_gelu(x, bias)
    assert out.is_contiguous()
    torch.testing.assert_close(out, ref.bias_gelu(x, bias), **tol(dtype))


def test_empty(device):
    assert ops.bias_gelu(torch.empty(2, 0, 8, device=device), torch.ones(8, device=device)).shape == (2, 0, 8)


@pytest.mark.parametrize("x,bias,message", [
    (torch.ones(2, 3, 8), torch.ones(7), r"bias must have shape \(N,\) = \(8,\)"),
    (torch.ones(2, 3, 8), torch.ones(1, 8), r"bias must be 1-D"),
    (torch.ones(2, 3, 8), torch.ones(8).half(), r"bias and x must have the same dtype"),
    (torch.ones(2, 8).long(), torch.ones(8).long(), r"x must be float32, float16 or bfloat16"),
    (torch.tensor(1.0), torch.ones(1), r"x must have at least 1 dim"),
])
def test_errors(x, bias, message):
    with pytest.raises(RuntimeError, match=message):
        ops.bias_gelu(x, bias)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_device_mismatch():
    with pytest.raises(RuntimeError, match=r"bias must be on"):
        ops.bias_gelu(torch.ones(2, 8, device="cuda"), torch.ones(8))


def test_opcheck(device, device_name):
    if device_name == "emu":
        pytest.skip("opcheck of var_fast_emu ops fails test_faketensor: fake kernels are registered for var_fast:: only")
    torch.library.opcheck(torch.ops.var_fast.bias_gelu.default,
                          (_randn(2, 3, 16, seed=8, device=device), _randn(16, seed=9, device=device)))

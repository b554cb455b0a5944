"""The fused gated_residual_adaln against the two ops it replaces (gated_residual, then adaln_modulate on
its result), and the plain-PyTorch reference of the pair (pytest-benchmark).

Shapes of var_d16 (C = 1024) at batch 1 with CFG (2 rows per token) on three scales of the 256 px
patch set: 1 token, 13 x 13 and 16 x 16.

    python -m pytest benchmarks/bench_gated_residual_adaln.py --benchmark-group-by=group
"""
import pytest
import torch

from var_fast import ops
from var_fast.reference import attention as ref

HAS_CUDA = torch.cuda.is_available()
DEVICES = [pytest.param("cpu", id="cpu"),
           pytest.param("cuda", id="cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU"))]
DTYPES = [pytest.param(torch.float32, id="fp32"), pytest.param(torch.bfloat16, id="bf16")]
SCALES = [pytest.param(1, id="1x1"), pytest.param(169, id="13x13"), pytest.param(256, id="16x16")]
B, C = 2, 1024


def _inputs(L, device, dtype):
    gen = torch.Generator().manual_seed(0)
    randn = lambda *shape, std=1.0: (torch.randn(*shape, generator=gen) * std).to(device=device, dtype=dtype)
    gamma, _, _, scale, _, shift = randn(B, 1, 6, C, std=0.5).unbind(2)
    return randn(B, L, C), randn(B, L, C), gamma, scale, shift


def _two_ops(x, y, gamma, scale, shift):
    out = ops.gated_residual(x, y, gamma)
    return out, ops.adaln_modulate(out, scale, shift, 1e-6)


IMPLS = {"fused": lambda *a: ops.gated_residual_adaln(*a, 1e-6), "two_ops": _two_ops,
         "reference": lambda *a: ref.gated_residual_adaln(*a, 1e-6)}


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("L", SCALES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device", DEVICES)
def test_gated_residual_adaln(benchmark, device, dtype, L, impl):
    benchmark.group = f"gated_residual_adaln {device} {dtype} L={L}"
    args = _inputs(L, device, dtype)
    fn = IMPLS[impl]

    def run():
        out = fn(*args)
        if device == "cuda":
            torch.cuda.synchronize()
        return out
    run()  # warm-up
    benchmark(run)

"""Bitwise sampling (Infinity): the native sample_bits / sample_cfg_bits against upstream's formula.

    OMP_NUM_THREADS=1 python -m pytest benchmarks/bench_bitwise_sampling.py --benchmark-only

Infinity's last scale at 1M pixels: L = 64 * 64 tokens of D = 32 bits (2D = 64 logits per token), batch 1 and
8 (CFG: the doubled batch 2B), tau = 0.5 and cfg = 3 (run_infinity's demo settings). Filters: top_p = 0.97
(upstream sorts each pair) and greedy top_k = 1. Implementations:
  var_fast   the native op, called with a status word as a fast loop calls it (without one it checks the
             flags on the host, a wait inside the timing on CUDA)
  reference  var_fast.reference.bitwise_sampling.sample_bits_: upstream's mul(1 / tau), CFG mix, filter on
             the (B, L*D, 2) pairs, softmax and multinomial
On CUDA each call ends with a synchronize.
"""
from __future__ import annotations

import pytest
import torch

from var_fast import ops
from var_fast.native import extension as _ext
from var_fast.reference.bitwise_sampling import sample_bits_

L, D = 64 * 64, 32
TAU, CFG = 0.5, 3.0
HAS_CUDA = torch.cuda.is_available()
DEVICES = [pytest.param("cpu", id="cpu"),
           pytest.param("cuda", id="cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU"))]
FILTERS = [pytest.param(0, 0.97, id="top_p0.97"), pytest.param(1, 0.0, id="greedy")]
IMPLS = ["var_fast", "reference"]


def _sampler(impl: str, device: str, cfg: bool, top_k: int, top_p: float):
    if impl == "var_fast":
        if not _ext.available():
            pytest.skip(f"var_fast extension unavailable: {_ext.load_error()}")
        status = ops.new_status(device)
        if cfg:
            return lambda x: ops.sample_cfg_bits(x, CFG, TAU, top_k, top_p, seed=1, status=status)
        return lambda x: ops.sample_bits(x, TAU, top_k, top_p, seed=1, status=status)
    rng = torch.Generator(device=device).manual_seed(0)
    return lambda x: sample_bits_(x, TAU, CFG if cfg else None, top_k, top_p, rng)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("top_k,top_p", FILTERS)
@pytest.mark.parametrize("cfg", [False, True], ids=["plain", "cfg"])
@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("device", DEVICES)
def test_sample_bits(benchmark, device, batch, cfg, top_k, top_p, impl):
    benchmark.group = f"sample_{'cfg_' if cfg else ''}bits-{device}-batch{batch}-k{top_k}-p{top_p}"
    fn = _sampler(impl, device, cfg, top_k, top_p)
    N = 2 * batch if cfg else batch
    logits = torch.randn(N, L, 2 * D, device=device, generator=torch.Generator(device).manual_seed(1)) * 3
    if device == "cuda":
        benchmark(lambda: (fn(logits), torch.cuda.synchronize()))
    else:
        benchmark(fn, logits)

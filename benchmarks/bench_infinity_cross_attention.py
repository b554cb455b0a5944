"""Infinity's cross-attention in the fast loop: the two variants of var_fast/infinity/fast_cross_attention.py
("loop": one SDPA per prompt, bit for bit the reference's varlen_attention; "padded": one SDPA over the
padded batch with a key mask) and the reference's varlen_attention itself (inputs rounded per call).

Infinity-2B-like shapes scaled to run in seconds on a CPU: one block's attention, 16 heads of 128
(C = 2048), CFG-doubled batches whose unconditional half is the empty negative prompt (1 token), at the
scales 1x1, 6x6, 16x16 and 32x32 of the 1M schedule (the 40x40 .. 64x64 scales only scale the query count).

    OMP_NUM_THREADS=1 python -m pytest benchmarks/bench_infinity_cross_attention.py --benchmark-only
    # on a GPU: add --device cuda (or run benchmarks/gpu_check) to measure choose_variant's CUDA default
"""
from __future__ import annotations

import math

import pytest
import torch

from var_fast.infinity import fast_cross_attention as fca
from var_fast.infinity.blocks import varlen_attention

H, c = 16, 128
BATCHES = {  # prompt token counts of the conditional half; the unconditional half has 1 token each
    "batch1": [37],
    "batch4": [12, 37, 80, 25],
}
SCALES = [1, 6, 16, 32]  # h = w
HAS_CUDA = torch.cuda.is_available()
DEVICES = [pytest.param("cpu", id="cpu"),
           pytest.param("cuda", id="cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU"))]
IMPLS = ["loop", "padded", "varlen_reference"]


def _inputs(batch, hw, device):
    lens = BATCHES[batch] + [1] * len(BATCHES[batch])
    gen = torch.Generator().manual_seed(0)
    k = torch.randn(sum(lens), H, c, generator=gen).to(device)
    v = torch.randn(sum(lens), H, c, generator=gen).to(device)
    q = torch.randn(len(lens), hw * hw, H * c, generator=gen).to(device)
    return q, k, v, lens


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("hw", SCALES, ids=[f"{s}x{s}" for s in SCALES])
@pytest.mark.parametrize("batch", list(BATCHES))
@pytest.mark.parametrize("device", DEVICES)
def test_cross_attention(benchmark, device, batch, hw, impl):
    q, k, v, lens = _inputs(batch, hw, device)
    scale = 1 / math.sqrt(c)
    kv = fca.TextKV.from_compact(k, v, lens)  # once per batch in the loop: not timed
    B, L, C = q.shape
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    if impl == "varlen_reference":
        def run():
            out = varlen_attention(q.view(-1, H, c), k, v, [L] * B, lens, scale)
            sync()
            return out.view(B, L, C)
    else:
        def run():
            out = fca.attend(q, kv, scale, impl)
            sync()
            return out

    reference = varlen_attention(q.view(-1, H, c), k, v, [L] * B, lens, scale).view(B, L, C)
    out = run()
    if impl != "padded":
        assert torch.equal(out, reference)
    else:
        torch.testing.assert_close(out, reference, rtol=2 ** -7, atol=1e-6)
    benchmark.extra_info.update(B=B, L=L, lens=lens)
    benchmark(run)

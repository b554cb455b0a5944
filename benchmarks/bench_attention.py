"""The AdaLN-modulated attention ops against their plain-PyTorch references (pytest-benchmark).

Shapes of one var_d16 block (C = 1024, 16 heads of 64) at a mid scale of the 256 px patch set
(13 x 13 = 169 queries over 424 cached keys of 680), CFG-doubled batch 2. cached_attention is also
timed against F.scaled_dot_product_attention on compact (already concatenated) keys and values, the
upstream path's attention call without the output reshape.

    python -m pytest benchmarks/bench_attention.py --benchmark-group-by=group
"""
import math

import pytest
import torch
import torch.nn.functional as F

from var_fast import ops
from var_fast.reference import attention as ref

HAS_CUDA = torch.cuda.is_available()
DEVICES = [pytest.param("cpu", id="cpu"),
           pytest.param("cuda", id="cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU"))]
DTYPES = [pytest.param(torch.float32, id="fp32"), pytest.param(torch.bfloat16, id="bf16")]

B, C, H = 2, 1024, 16
HEAD_DIM = C // H
PATCH_NUMS = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
SCALE_INDEX = 8  # 13 x 13
L = PATCH_NUMS[SCALE_INDEX] ** 2
OFFSET = sum(pn * pn for pn in PATCH_NUMS[:SCALE_INDEX])
LMAX = sum(pn * pn for pn in PATCH_NUMS)
KV_LEN = OFFSET + L


def _timed(benchmark, device, fn, *args):
    def run():
        out = fn(*args)
        if device == "cuda":
            torch.cuda.synchronize()
        return out
    run()  # warm-up (lazy initialisation, caches)
    benchmark(run)


def _inputs(device, dtype):
    gen = torch.Generator().manual_seed(0)
    randn = lambda *shape, std=1.0: (torch.randn(*shape, generator=gen) * std).to(device=device, dtype=dtype)
    ada = randn(B, 1, 6, C, std=0.5)
    gamma1, _, scale1, _, shift1, _ = ada.unbind(2)
    return dict(
        x=randn(B, L, C), y=randn(B, L, C), gamma=gamma1, scale=scale1, shift=shift1,
        qkv=randn(B, L, 3 * C), q_bias=randn(C, std=0.5), v_bias=randn(C, std=0.5),
        head_scale=torch.full((H,), 4.0, device=device),
        k_cache=randn(B, H, LMAX, HEAD_DIM), v_cache=randn(B, H, LMAX, HEAD_DIM), q=randn(B, H, L, HEAD_DIM),
    )


IMPLS = [pytest.param("op", id="op"), pytest.param("reference", id="reference")]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device", DEVICES)
def test_adaln_modulate(benchmark, device, dtype, impl):
    benchmark.group = f"adaln_modulate-{device}-{dtype}"
    t = _inputs(device, dtype)
    fn = ops.adaln_modulate if impl == "op" else ref.adaln_modulate
    _timed(benchmark, device, fn, t["x"], t["scale"], t["shift"], 1e-6)


@pytest.mark.parametrize("l2_norm", [False, True], ids=["plain", "l2norm"])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device", DEVICES)
def test_qkv_to_cache(benchmark, device, dtype, impl, l2_norm):
    benchmark.group = f"qkv_to_cache-{device}-{dtype}-{'l2norm' if l2_norm else 'plain'}"
    t = _inputs(device, dtype)
    fn = ops.qkv_to_cache if impl == "op" else ref.qkv_to_cache
    _timed(benchmark, device, fn, t["qkv"], t["q_bias"], t["v_bias"], t["head_scale"] if l2_norm else None,
           t["k_cache"], t["v_cache"], OFFSET)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device", DEVICES)
def test_qkv_to_cache_rope(benchmark, device, dtype, impl):
    """Infinity's epilogue: L2 norm, head_scale, then RoPE of q and k ((2, L, c/2) float32 cos/sin table)."""
    benchmark.group = f"qkv_to_cache-{device}-{dtype}-l2norm-rope"
    t = _inputs(device, dtype)
    angles = torch.rand(L, HEAD_DIM // 2, generator=torch.Generator().manual_seed(1)) * 100
    rope = torch.stack((angles.cos(), angles.sin())).to(device)
    fn = ops.qkv_to_cache if impl == "op" else ref.qkv_to_cache
    _timed(benchmark, device, fn, t["qkv"], t["q_bias"], t["v_bias"], t["head_scale"], t["k_cache"], t["v_cache"],
           OFFSET, rope)


@pytest.mark.parametrize("impl", IMPLS + [pytest.param("sdpa", id="sdpa")])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device", DEVICES)
def test_cached_attention(benchmark, device, dtype, impl):
    benchmark.group = f"cached_attention-{device}-{dtype}"
    t = _inputs(device, dtype)
    scale = 0.25 / math.sqrt(HEAD_DIM)
    if impl == "sdpa":
        k = t["k_cache"][:, :, :KV_LEN].contiguous()
        v = t["v_cache"][:, :, :KV_LEN].contiguous()
        _timed(benchmark, device, lambda: F.scaled_dot_product_attention(t["q"], k, v, scale=scale))
        return
    fn = ops.cached_attention if impl == "op" else ref.cached_attention
    _timed(benchmark, device, fn, t["q"], t["k_cache"], t["v_cache"], KV_LEN, scale)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device", DEVICES)
def test_gated_residual(benchmark, device, dtype, impl):
    benchmark.group = f"gated_residual-{device}-{dtype}"
    t = _inputs(device, dtype)
    fn = ops.gated_residual if impl == "op" else ref.gated_residual
    _timed(benchmark, device, fn, t["x"], t["y"], t["gamma"])

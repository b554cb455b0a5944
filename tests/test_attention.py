"""qkv_to_cache and cached_attention: the attention of one VAR block over a preallocated KV cache.

Each op is compared with its plain-PyTorch reference, and the two together, scale by scale, with
the reference SelfAttention growing its KVCache by concatenation (var_fast/models/blocks.py).
"""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import HAS_CUDA, tol
from var_fast import ops
from var_fast.native.extension import require
from var_fast.models import PATCH_NUMS_256, PATCH_NUMS_512
from var_fast.infinity.blocks import MAX_SCALE_MUL
from var_fast.infinity.blocks import SelfAttention as InfinitySelfAttention
from var_fast.infinity.rope2d import apply_rope, rope_cache
from var_fast.models.blocks import KVCache, SelfAttention
from var_fast.reference import attention as ref

PATCH_SETS = [pytest.param(PATCH_NUMS_256, id="256px"), pytest.param(PATCH_NUMS_512, id="512px")]


def _randn(*shape, seed, dtype=torch.float32, device="cpu", std=1.0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=gen) * std).to(device=device, dtype=dtype)


def _cpu_ops():
    """The CPU ops themselves (``ops`` may be routed to the emulated CUDA kernels)."""
    require()
    return torch.ops.var_fast


def _skip_on_emu(device_name, why):
    if device_name == "emu":
        pytest.skip(f"emulated CUDA (~1000x slower): {why}")


def _scale_starts(patch_nums):
    """(offset, L) of every scale in the token sequence."""
    lengths = [pn * pn for pn in patch_nums]
    starts = [0] + list(itertools.accumulate(lengths))[:-1]
    return list(zip(starts, lengths))


# ---------------------------------------------------------------------------------------------------
# qkv_to_cache
# ---------------------------------------------------------------------------------------------------
def _qkv_inputs(B, L, H, c, Lmax, dtype, device, l2_norm, seed=0):
    C = H * c
    qkv = _randn(B, L, 3 * C, seed=seed, dtype=dtype, device=device)
    q_bias = _randn(C, seed=seed + 1, dtype=dtype, device=device, std=0.5)
    v_bias = _randn(C, seed=seed + 2, dtype=dtype, device=device, std=0.5)
    # The model's exp(scale_mul) in float32, around the initial 4 (upstream clamps it below 100)
    head_scale = (4 * _randn(H, seed=seed + 3, std=0.3).exp()).to(device) if l2_norm else None
    k_cache = _randn(B, H, Lmax, c, seed=seed + 4, dtype=dtype, device=device)
    v_cache = _randn(B, H, Lmax, c, seed=seed + 5, dtype=dtype, device=device)
    return qkv, q_bias, v_bias, head_scale, k_cache, v_cache


def _reference_qkv(qkv, q_bias, v_bias, head_scale, k_cache, v_cache, offset):
    """The reference on float32 copies: (q, k_cache, v_cache), rounded once to the inputs' dtype."""
    k_ref, v_ref = k_cache.to(torch.float32, copy=True), v_cache.to(torch.float32, copy=True)
    q = ref.qkv_to_cache(qkv.float(), q_bias.float(), v_bias.float(), head_scale, k_ref, v_ref, offset)
    return q.to(qkv.dtype), k_ref.to(k_cache.dtype), v_ref.to(v_cache.dtype)


def _assert_cache_write(k_cache, v_cache, k_before, v_before, k_ref, v_ref, offset, L, dtype):
    written = slice(offset, offset + L)
    torch.testing.assert_close(k_cache[:, :, written], k_ref[:, :, written], **tol(dtype))
    torch.testing.assert_close(v_cache[:, :, written], v_ref[:, :, written], **tol(dtype))
    for cache, before in ((k_cache, k_before), (v_cache, v_before)):  # nothing else is touched
        assert torch.equal(cache[:, :, :offset], before[:, :, :offset])
        assert torch.equal(cache[:, :, offset + L:], before[:, :, offset + L:])


@pytest.mark.parametrize("l2_norm", [False, True], ids=["plain", "l2norm"])
@pytest.mark.parametrize("H,c", [(1, 64), (3, 64), (1, 192)], ids=["C64H1", "C192H3", "C192H1"])
@pytest.mark.parametrize("B,L,at_end", [(1, 1, False), (3, 5, True), (1, 169, True), (3, 169, False)])
def test_qkv_to_cache_matches_reference(device, device_name, dtype, B, L, at_end, H, c, l2_norm):
    if B * L > 169:
        _skip_on_emu(device_name, "(1, 169) and (3, 5) cover this shape's rows and batches")
    Lmax = L + 37
    offset = Lmax - L if at_end else 0  # 37: the cache's other rows must stay untouched either way
    args = _qkv_inputs(B, L, H, c, Lmax, dtype, device, l2_norm)
    qkv, q_bias, v_bias, head_scale, k_cache, v_cache = args
    k_before, v_before = k_cache.clone(), v_cache.clone()
    q = ops.qkv_to_cache(qkv, q_bias, v_bias, head_scale, k_cache, v_cache, offset)
    assert q.shape == (B, H, L, c) and q.dtype == dtype and q.is_contiguous()
    q_ref, k_ref, v_ref = _reference_qkv(qkv, q_bias, v_bias, head_scale, k_before, v_before, offset)
    torch.testing.assert_close(q, q_ref, **tol(dtype))
    _assert_cache_write(k_cache, v_cache, k_before, v_before, k_ref, v_ref, offset, L, dtype)
    if l2_norm:  # unit keys, queries of norm head_scale
        torch.testing.assert_close(k_cache[:, :, offset:offset + L].float().norm(dim=-1),
                                   torch.ones(B, H, L, device=device), **tol(dtype))
        torch.testing.assert_close(q.float().norm(dim=-1), head_scale.view(1, H, 1).expand(B, H, L), **tol(dtype))
    if device_name != "cpu":
        k_cpu, v_cpu = k_before.cpu(), v_before.cpu()
        q_cpu = _cpu_ops().qkv_to_cache(qkv.cpu(), q_bias.cpu(), v_bias.cpu(),
                                        None if head_scale is None else head_scale.cpu(), k_cpu, v_cpu, offset)
        torch.testing.assert_close(q.cpu(), q_cpu, **tol(dtype))
        torch.testing.assert_close(k_cache.cpu(), k_cpu, **tol(dtype))
        torch.testing.assert_close(v_cache.cpu(), v_cpu, **tol(dtype))


@pytest.mark.parametrize("patch_nums", PATCH_SETS)
def test_qkv_to_cache_fills_every_scale(device, patch_nums):
    # Scale by scale at the offsets of the patch set, up to the last one that ends exactly at Lmax.
    B, H, c = 2, 1, 64
    scales = _scale_starts(patch_nums)
    Lmax = sum(L for _, L in scales)
    k_cache = torch.full((B, H, Lmax, c), float("nan"), device=device)
    v_cache = torch.full_like(k_cache, float("nan"))
    k_ref, v_ref = torch.empty_like(k_cache), torch.empty_like(v_cache)
    for si, (offset, L) in enumerate(scales):
        qkv, q_bias, v_bias, head_scale, _, _ = _qkv_inputs(B, L, H, c, 1, torch.float32, device, True, seed=10 * si)
        q = ops.qkv_to_cache(qkv, q_bias, v_bias, head_scale, k_cache, v_cache, offset)
        q_ref = ref.qkv_to_cache(qkv, q_bias, v_bias, head_scale, k_ref, v_ref, offset)
        torch.testing.assert_close(q, q_ref)
        assert not k_cache[:, :, :offset + L].isnan().any() and k_cache[:, :, offset + L:].isnan().all()
    assert offset + L == Lmax
    torch.testing.assert_close(k_cache, k_ref)
    torch.testing.assert_close(v_cache, v_ref)


def test_qkv_to_cache_head_scale_layouts(device, dtype):
    # head_scale as the model holds it, (1, H, 1, 1), in the compute dtype: same as the (H,) float32 one.
    B, L, H, c = 2, 5, 3, 64
    qkv, q_bias, v_bias, head_scale, k_cache, v_cache = _qkv_inputs(B, L, H, c, 16, dtype, device, True)
    q = ops.qkv_to_cache(qkv, q_bias, v_bias, head_scale.to(dtype).view(1, H, 1, 1), k_cache, v_cache, 3)
    q_ref, _, _ = _reference_qkv(qkv, q_bias, v_bias, head_scale.to(dtype).float(), k_cache, v_cache, 3)
    torch.testing.assert_close(q, q_ref, **tol(dtype))


def test_qkv_to_cache_zero_rows_stay_finite(device):
    # F.normalize clamps the norm at 1e-12: all-zero q/k rows give zeros, not NaN.
    B, L, H, c = 1, 2, 2, 64
    qkv = torch.zeros(B, L, 3 * H * c, device=device)
    zeros = torch.zeros(H * c, device=device)
    k_cache, v_cache = torch.ones(B, H, 4, c, device=device), torch.ones(B, H, 4, c, device=device)
    q = ops.qkv_to_cache(qkv, zeros, zeros, torch.full((H,), 4.0, device=device), k_cache, v_cache, 1)
    assert torch.equal(q, torch.zeros_like(q))
    assert torch.equal(k_cache[:, :, 1:3], torch.zeros(B, H, 2, c, device=device))


def test_qkv_to_cache_strided_inputs_and_caches(device, dtype):
    B, L, H, c, Lmax, offset = 3, 13, 3, 64, 40, 20
    qkv, q_bias, v_bias, head_scale, _, _ = _qkv_inputs(B, L, H, c, 1, dtype, device, True)
    qkv = torch.cat((qkv, qkv[..., :7]), dim=-1)[..., :3 * H * c]  # row stride 3C + 7
    q_bias = torch.stack((q_bias, q_bias), dim=-1)[:, 0]  # stride 2
    # caches in (B, Lmax, H, c) memory seen as (B, H, Lmax, c), and one with head dim stride != 1
    k_mem = _randn(B, Lmax, H, c, seed=40, dtype=dtype, device=device)
    v_mem = _randn(B, H, c, Lmax, seed=41, dtype=dtype, device=device)
    k_cache, v_cache = k_mem.transpose(1, 2), v_mem.transpose(2, 3)
    assert not (qkv.is_contiguous() or q_bias.is_contiguous() or k_cache.is_contiguous() or v_cache.stride(3) == 1)
    k_before, v_before = k_cache.clone(), v_cache.clone()
    q = ops.qkv_to_cache(qkv, q_bias, v_bias, head_scale, k_cache, v_cache, offset)
    q_ref, k_ref, v_ref = _reference_qkv(qkv, q_bias, v_bias, head_scale, k_before, v_before, offset)
    torch.testing.assert_close(q, q_ref, **tol(dtype))
    _assert_cache_write(k_cache, v_cache, k_before, v_before, k_ref, v_ref, offset, L, dtype)


def test_qkv_to_cache_empty(device):
    qkv, q_bias, v_bias, _, k_cache, v_cache = _qkv_inputs(2, 0, 2, 32, 8, torch.float32, device, False)
    before = k_cache.clone()
    q = ops.qkv_to_cache(qkv, q_bias, v_bias, None, k_cache, v_cache, 8)
    assert q.shape == (2, 2, 0, 32) and torch.equal(k_cache, before)


def _qkv_good():
    qkv, q_bias, v_bias, head_scale, k_cache, v_cache = _qkv_inputs(2, 5, 3, 64, 16, torch.float32, "cpu", True)
    return dict(qkv=qkv, q_bias=q_bias, v_bias=v_bias, head_scale=head_scale, k_cache=k_cache, v_cache=v_cache,
                offset=4)


@pytest.mark.parametrize("name,value,message", [
    ("qkv", torch.zeros(2, 5, 3 * 192 + 1), r"qkv must have last dim 3 \* H \* c = 576"),
    ("qkv", torch.zeros(2, 576), r"qkv must be 3-D"),
    ("qkv", torch.zeros(2, 5, 576, dtype=torch.int32), r"qkv must be float32, float16 or bfloat16"),
    ("q_bias", torch.zeros(191), r"q_bias must have shape \(192,\)"),
    ("v_bias", torch.zeros(192, dtype=torch.float16), r"v_bias and qkv must have the same dtype"),
    ("head_scale", torch.ones(2), r"head_scale must hold one value per head \(H = 3\)"),
    ("head_scale", torch.ones(3, dtype=torch.int64), r"head_scale must be float32"),
    ("k_cache", torch.zeros(2, 3, 16, 64, dtype=torch.bfloat16), r"k_cache and qkv must have the same dtype"),
    ("k_cache", torch.zeros(1, 3, 16, 64), r"v_cache must have the shape of k_cache"),
    ("v_cache", torch.zeros(2, 3, 17, 64), r"v_cache must have the shape of k_cache"),
    ("offset", 12, r"offset \+ L must lie in \[0, Lmax\]: offset 12 \+ L 5 > Lmax 16"),
    ("offset", -1, r"offset \+ L must lie in \[0, Lmax\]"),
])
def test_qkv_to_cache_errors(name, value, message):
    args = _qkv_good()
    args[name] = value
    with pytest.raises(RuntimeError, match=message):
        ops.qkv_to_cache(**args)


def test_qkv_to_cache_error_batch_and_head_dim():
    args = _qkv_good()
    args["k_cache"], args["v_cache"] = torch.zeros(1, 3, 16, 64), torch.zeros(1, 3, 16, 64)
    with pytest.raises(RuntimeError, match=r"k_cache must have batch 2"):
        ops.qkv_to_cache(**args)
    args = _qkv_good()
    args["k_cache"], args["v_cache"] = torch.zeros(2, 1, 16, 576), torch.zeros(2, 1, 16, 576)
    with pytest.raises(RuntimeError, match=r"head dim \(k_cache.size\(3\)\) must be in \[1, 256\]"):
        ops.qkv_to_cache(**args)


def test_qkv_to_cache_rejects_overlapping_caches():
    args = _qkv_good()
    args["v_cache"] = args["k_cache"]
    with pytest.raises(RuntimeError, match=r"single memory location"):
        ops.qkv_to_cache(**args)
    args = _qkv_good()
    args["k_cache"] = torch.zeros(1, 3, 16, 64).expand(2, 3, 16, 64)
    with pytest.raises(RuntimeError, match=r"single memory location"):
        ops.qkv_to_cache(**args)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_qkv_to_cache_device_mismatch():
    args = {k: (v.cuda() if isinstance(v, torch.Tensor) else v) for k, v in _qkv_good().items()}
    args["k_cache"] = args["k_cache"].cpu()
    with pytest.raises(RuntimeError, match=r"k_cache must be on"):
        ops.qkv_to_cache(**args)


@pytest.mark.parametrize("l2_norm", [False, True], ids=["plain", "l2norm"])
def test_qkv_to_cache_opcheck(device, device_name, l2_norm):
    if device_name == "emu":
        pytest.skip("opcheck of var_fast_emu ops fails test_faketensor: fake kernels are registered for var_fast:: only")
    qkv, q_bias, v_bias, head_scale, k_cache, v_cache = _qkv_inputs(2, 5, 3, 64, 16, torch.float32, device, l2_norm)
    torch.library.opcheck(torch.ops.var_fast.qkv_to_cache.default,
                          (qkv, q_bias, v_bias, head_scale, k_cache, v_cache, 4))


# ---------------------------------------------------------------------------------------------------
# cached_attention
# ---------------------------------------------------------------------------------------------------
def _attention_inputs(B, H, L, c, Lmax, kv_len, dtype, device, seed=0, poison=True):
    q = _randn(B, H, L, c, seed=seed, dtype=dtype, device=device)
    k_cache = _randn(B, H, Lmax, c, seed=seed + 1, dtype=dtype, device=device)
    v_cache = _randn(B, H, Lmax, c, seed=seed + 2, dtype=dtype, device=device)
    if poison:  # positions past kv_len are never read
        k_cache[:, :, kv_len:] = float("nan")
        v_cache[:, :, kv_len:] = float("nan")
    return q, k_cache, v_cache


def _reference_attention(q, k_cache, v_cache, kv_len, scale):
    return ref.cached_attention(q.float(), k_cache.float(), v_cache.float(), kv_len, scale).to(q.dtype)


ATTENTION_SHAPES = [  # (B, H, L, c, Lmax, kv_len)
    (1, 1, 1, 64, 680, 1),          # first scale
    (3, 3, 5, 64, 680, 5),
    (2, 3, 13, 64, 680, 5),         # more queries than keys
    (1, 3, 169, 64, 680, 424),      # 256px scale 13 x 13
    (3, 1, 25, 64, 70, 70),         # kv_len == Lmax, not a multiple of the key block
    (1, 1, 256, 64, 680, 680),      # 256px last scale
    (1, 1, 1024, 64, 2240, 2240),   # 512px last scale
    (2, 3, 9, 128, 200, 130),
    (1, 2, 33, 24, 100, 77),        # any head dim <= 256 works
    (1, 1, 7, 256, 300, 199),
    (2, 1, 3, 1, 10, 9),
]


@pytest.mark.parametrize("B,H,L,c,Lmax,kv_len", ATTENTION_SHAPES)
def test_cached_attention_matches_reference(device, device_name, dtype, B, H, L, c, Lmax, kv_len):
    if B * H * L * kv_len > 100_000:
        _skip_on_emu(device_name, "large shape; test_cached_attention_kernel_paths runs the VAR shapes on emu")
    q, k_cache, v_cache = _attention_inputs(B, H, L, c, Lmax, kv_len, dtype, device)
    scale = 0.25 / math.sqrt(c)
    out = ops.cached_attention(q, k_cache, v_cache, kv_len, scale)
    assert out.shape == (B, L, H * c) and out.dtype == dtype and out.is_contiguous()
    torch.testing.assert_close(out, _reference_attention(q, k_cache, v_cache, kv_len, scale), **tol(dtype))
    if device_name != "cpu":
        cpu = _cpu_ops().cached_attention(q.cpu(), k_cache.cpu(), v_cache.cpu(), kv_len, scale)
        torch.testing.assert_close(out.cpu(), cpu, **tol(dtype))


# The two CUDA kernels: tensor cores (WMMA) for float16 / bfloat16 with head dim 64 or 128 (on sm_80+,
# and the emulated H100), CUDA cores (SIMT) for float32 and every other head dim.
KERNEL_PATH_SHAPES = [  # (B, H, L, c, Lmax, kv_len)
    pytest.param(1, 1, 169, 64, 680, 424, id="VAR-13x13-424keys"),  # one head of a 256px model's scale
    pytest.param(1, 1, 1, 64, 680, 1, id="L1-kv1"),
    pytest.param(1, 2, 70, 128, 200, 130, id="c128-kv-not-tile-multiple"),
    pytest.param(1, 2, 33, 24, 100, 77, id="c24-simt"),
    pytest.param(1, 1, 7, 63, 50, 45, id="odd-c63-simt"),
    pytest.param(2, 1, 3, 1, 10, 9, id="c1-simt"),
]


@pytest.mark.parametrize("B,H,L,c,Lmax,kv_len", KERNEL_PATH_SHAPES)
def test_cached_attention_kernel_paths(kernel_device, dtype, B, H, L, c, Lmax, kv_len):
    q, k_cache, v_cache = _attention_inputs(B, H, L, c, Lmax, kv_len, dtype, kernel_device, seed=30)
    scale = 1 / math.sqrt(c)
    out = ops.cached_attention(q, k_cache, v_cache, kv_len, scale)
    assert out.shape == (B, L, H * c) and out.dtype == dtype and out.isfinite().all()
    torch.testing.assert_close(out, _reference_attention(q, k_cache, v_cache, kv_len, scale), **tol(dtype))
    cpu = _cpu_ops().cached_attention(q.cpu(), k_cache.cpu(), v_cache.cpu(), kv_len, scale)
    torch.testing.assert_close(out.cpu(), cpu, **tol(dtype))


# Each branch of the cached_attention plan on the emulated GPU (tests/emu/device.py), asserted from the launch.
@pytest.mark.emu
@pytest.mark.parametrize("gpu,dtype,c,kernel", [
    pytest.param("h100", torch.float16, 64, "attention_wmma_kernel<c10::Half, 64>", id="wmma64-h100"),
    pytest.param("a100", torch.bfloat16, 128, "attention_wmma_kernel<c10::BFloat16, 128>", id="wmma128-a100"),
    pytest.param("rtx4090", torch.float32, 64, "attention_simt_kernel<float>", id="simt-fp32-rtx4090"),
    pytest.param("l4", torch.float16, 24, "attention_simt_kernel<c10::Half>", id="simt-head-dim-24-l4"),
    pytest.param("t4", torch.float16, 64, "attention_simt_kernel<c10::Half>", id="simt-no-tensor-cores-sm75"),
    pytest.param("a10", torch.float32, 256, "attention_simt_kernel<float>", id="simt-head-dim-256-opt-in-a10"),
])
def test_cached_attention_plan_branches(emulated_gpu, gpu, dtype, c, kernel):
    emulated_gpu.set_device(emulated_gpu.T4 if gpu == "t4" else emulated_gpu.BY_NAME[gpu])
    q, k_cache, v_cache = _attention_inputs(1, 2, 5, c, 40, 37, dtype, "cpu", seed=31)
    with emulated_gpu.recorded_launches() as launches:
        out = ops.cached_attention(q, k_cache, v_cache, 37, 1 / math.sqrt(c))
    (launch,) = launches
    assert launch.name == kernel and launch.grid == (2, 1, 1)
    torch.testing.assert_close(out, _cpu_ops().cached_attention(q, k_cache, v_cache, 37, 1 / math.sqrt(c)), **tol(dtype))


@pytest.mark.emu
def test_cached_attention_refuses_what_shared_memory_cannot_hold(emulated_gpu):
    """Head dim 256 on CUDA cores needs 82,048 bytes of shared memory per block: beyond a 64 KiB (sm_75) GPU,
    refused before launching."""
    emulated_gpu.set_device(emulated_gpu.T4)
    q, k_cache, v_cache = _attention_inputs(1, 1, 3, 256, 8, 8, torch.float32, "cpu", seed=32)
    with emulated_gpu.recorded_launches() as launches:
        with pytest.raises(RuntimeError, match="cached_attention needs 82048 bytes of shared memory per block for "
                                               "this head dim, the device allows 65536"):
            ops.cached_attention(q, k_cache, v_cache, 8, 0.0625)
    assert launches == []


@pytest.mark.emu
def test_emulated_capture(emulated_gpu):
    """Both ops are captured in every scale's CUDA graph: under an emulated capture (which fails on a device
    read or a host synchronisation) they run and give the eager results."""
    qkv, q_bias, v_bias, head_scale, k_cache, v_cache = _qkv_inputs(2, 9, 2, 64, 20, torch.float16, "cpu", True, seed=33)
    k_eager, v_eager = k_cache.clone(), v_cache.clone()
    q_eager = ops.qkv_to_cache(qkv, q_bias, v_bias, head_scale, k_eager, v_eager, 4)
    out_eager = ops.cached_attention(q_eager, k_eager, v_eager, 13, 0.125)
    with emulated_gpu.emulated_capture():
        q = ops.qkv_to_cache(qkv, q_bias, v_bias, head_scale, k_cache, v_cache, 4)
        out = ops.cached_attention(q, k_cache, v_cache, 13, 0.125)
    assert torch.equal(q, q_eager) and torch.equal(k_cache, k_eager) and torch.equal(out, out_eager)


@pytest.mark.parametrize("B,H,L,c,Lmax,kv_len", [(2, 3, 13, 64, 680, 424), (1, 2, 33, 24, 100, 77),
                                                    (1, 1, 40, 200, 300, 130), (2, 3, 9, 128, 200, 130)])
def test_cached_attention_portable_cpu_kernels(monkeypatch, dtype, B, H, L, c, Lmax, kv_len):
    # The CPU op runs AVX2 inner loops where the processor has them; VAR_FAST_CPU_PORTABLE=1 forces the
    # portable ones: both must match the reference (on machines without AVX2 both runs are portable).
    q, k_cache, v_cache = _attention_inputs(B, H, L, c, Lmax, kv_len, dtype, "cpu")
    scale = 0.25 / math.sqrt(c)
    expected = _reference_attention(q, k_cache, v_cache, kv_len, scale)
    monkeypatch.setenv("VAR_FAST_CPU_PORTABLE", "1")
    portable = ops.cached_attention(q, k_cache, v_cache, kv_len, scale)
    monkeypatch.delenv("VAR_FAST_CPU_PORTABLE")
    default = ops.cached_attention(q, k_cache, v_cache, kv_len, scale)
    torch.testing.assert_close(portable, expected, **tol(dtype))
    torch.testing.assert_close(default, expected, **tol(dtype))


def test_cached_attention_sharp_softmax_across_key_blocks(device, dtype):
    # Large logits (exp overflows without the running max) with the winning key in a late key block:
    # the earlier blocks' partial sums must be rescaled correctly.
    B, H, L, c, kv_len = 2, 2, 6, 64, 300
    q, k_cache, v_cache = _attention_inputs(B, H, L, c, kv_len, kv_len, dtype, device, seed=7, poison=False)
    k_cache[:, :, 290] = q[:, :, 0] * 2
    scale = 3.0
    out = ops.cached_attention(q, k_cache, v_cache, kv_len, scale)
    expected = ref.cached_attention(q.double(), k_cache.double(), v_cache.double(), kv_len, scale)
    assert out.isfinite().all()
    torch.testing.assert_close(out.double(), expected, **tol(dtype))
    # query 0 puts (almost) all its weight on key 290
    torch.testing.assert_close(out[:, 0].view(B, H, c).float(), v_cache[:, :, 290].float(), **tol(dtype))


def _layout(shape, layout, seed, dtype, device):
    """A (B, H, N, c) tensor in various memory layouts (values independent of the layout's strides)."""
    B, H, N, c = shape
    if layout == "contiguous":
        return _randn(B, H, N, c, seed=seed, dtype=dtype, device=device)
    if layout == "transposed":  # (B, N, H, c) memory: head-interleaved rows
        return _randn(B, N, H, c, seed=seed, dtype=dtype, device=device).transpose(1, 2)
    if layout == "misaligned":  # contiguous, but starting one element into its storage
        return _randn(B * H * N * c + 1, seed=seed, dtype=dtype, device=device)[1:].view(B, H, N, c)
    if layout == "padded_rows":  # unit stride along c, odd row stride
        return _randn(B, H, N, c + 1, seed=seed, dtype=dtype, device=device)[..., 1:]
    if layout == "dim_strided":  # stride along c != 1
        return _randn(B, H, c, N, seed=seed, dtype=dtype, device=device).transpose(2, 3)
    raise ValueError(layout)


@pytest.mark.parametrize("q_layout,cache_layout", [("transposed", "transposed"), ("misaligned", "padded_rows"),
                                                   ("transposed", "dim_strided")])
@pytest.mark.parametrize("c", [64, 40])
def test_cached_attention_strided_inputs(device, dtype, c, q_layout, cache_layout):
    B, H, L, Lmax, kv_len = 2, 3, 13, 90, 70
    q = _layout((B, H, L, c), q_layout, 20, dtype, device)
    k_cache = _layout((B, H, Lmax, c), cache_layout, 21, dtype, device)
    v_cache = _layout((B, H, Lmax, c), cache_layout, 22, dtype, device)
    out = ops.cached_attention(q, k_cache, v_cache, kv_len, 0.125)
    torch.testing.assert_close(out, _reference_attention(q, k_cache, v_cache, kv_len, 0.125), **tol(dtype))


def test_cached_attention_empty(device):
    q, k_cache, v_cache = _attention_inputs(2, 3, 0, 64, 10, 4, torch.float32, device)
    assert ops.cached_attention(q, k_cache, v_cache, 4, 0.1).shape == (2, 0, 192)


def _attention_good():
    q, k_cache, v_cache = _attention_inputs(2, 3, 5, 64, 16, 8, torch.float32, "cpu", poison=False)
    return dict(q=q, k_cache=k_cache, v_cache=v_cache, kv_len=8, scale=0.125)


@pytest.mark.parametrize("name,value,message", [
    ("q", torch.zeros(2, 5, 192), r"q must be 4-D"),
    ("q", torch.zeros(2, 3, 5, 64, dtype=torch.float64), r"q must be float32, float16 or bfloat16"),
    ("q", torch.zeros(2, 3, 5, 64, dtype=torch.float16), r"k_cache and q must have the same dtype"),
    ("q", torch.zeros(2, 2, 5, 64), r"k_cache must have shape \(B, H, Lmax, c\) with \(B, H, c\) = \(2, 2, 64\)"),
    ("q", torch.zeros(2, 3, 5, 32), r"k_cache must have shape"),
    ("q", torch.zeros(3, 3, 5, 64), r"k_cache must have shape"),
    ("v_cache", torch.zeros(2, 3, 16, 64, dtype=torch.bfloat16), r"v_cache and q must have the same dtype"),
    ("v_cache", torch.zeros(2, 3, 15, 64), r"v_cache must have the shape of k_cache"),
    ("k_cache", torch.zeros(2, 3, 64), r"k_cache must be 4-D"),
    ("kv_len", 0, r"kv_len must be in \[1, Lmax = 16\], got 0"),
    ("kv_len", 17, r"kv_len must be in \[1, Lmax = 16\], got 17"),
    ("scale", float("nan"), r"scale must be finite"),
])
def test_cached_attention_errors(name, value, message):
    args = _attention_good()
    args[name] = value
    with pytest.raises(RuntimeError, match=message):
        ops.cached_attention(**args)


def test_cached_attention_error_head_dim():
    q, k_cache, v_cache = _attention_inputs(1, 1, 2, 257, 4, 4, torch.float32, "cpu", poison=False)
    with pytest.raises(RuntimeError, match=r"head dim \(q.size\(3\)\) must be in \[1, 256\]"):
        ops.cached_attention(q, k_cache, v_cache, 4, 0.1)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_cached_attention_device_mismatch():
    args = _attention_good()
    args["q"] = args["q"].cuda()
    args["k_cache"] = args["k_cache"].cuda()
    with pytest.raises(RuntimeError, match=r"v_cache must be on"):
        ops.cached_attention(**args)


def test_cached_attention_opcheck(device, device_name):
    if device_name == "emu":
        pytest.skip("opcheck of var_fast_emu ops fails test_faketensor: fake kernels are registered for var_fast:: only")
    q, k_cache, v_cache = _attention_inputs(2, 3, 5, 64, 16, 9, torch.float32, device, poison=False)
    torch.library.opcheck(torch.ops.var_fast.cached_attention.default, (q, k_cache, v_cache, 9, 0.125))


# ---------------------------------------------------------------------------------------------------
# both ops, scale by scale, against the reference SelfAttention with a growing KVCache
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("attn_l2_norm", [False, True], ids=["plain", "l2norm"])
@pytest.mark.parametrize("patch_nums", PATCH_SETS)
def test_multiscale_loop_matches_self_attention(device, dtype, patch_nums, attn_l2_norm):
    B, C, H, num_scales = 3, 192, 3, 5
    torch.manual_seed(0)
    attn = SelfAttention(C, H, attn_l2_norm)
    with torch.no_grad():
        attn.q_bias.normal_(0, 0.5)
        attn.v_bias.normal_(0, 0.5)
        if attn_l2_norm:
            attn.scale_mul_1H11.add_(torch.randn(1, H, 1, 1) * 0.3)
    attn = attn.to(device=device, dtype=dtype)
    c = attn.head_dim
    Lmax = sum(pn * pn for pn in patch_nums)  # the fast path preallocates the caches of all scales
    k_cache = torch.full((B, H, Lmax, c), float("nan"), dtype=dtype, device=device)
    v_cache = torch.full_like(k_cache, float("nan"))
    head_scale = attn.head_scale().reshape(H) if attn_l2_norm else None
    cache = KVCache()
    with torch.no_grad():
        for si, (offset, L) in enumerate(_scale_starts(patch_nums)[:num_scales]):
            x = _randn(B, L, C, seed=100 + si, dtype=dtype, device=device)
            expected = attn(x, cache)
            qkv = F.linear(x, attn.mat_qkv.weight)
            q = ops.qkv_to_cache(qkv, attn.q_bias, attn.v_bias, head_scale, k_cache, v_cache, offset)
            got = attn.proj(ops.cached_attention(q, k_cache, v_cache, offset + L, attn.scale))
            torch.testing.assert_close(got, expected, **tol(dtype))
            torch.testing.assert_close(k_cache[:, :, :offset + L], cache.k, **tol(dtype))
            torch.testing.assert_close(v_cache[:, :, :offset + L], cache.v, **tol(dtype))
    assert k_cache[:, :, offset + L:].isnan().all()  # later scales' slots untouched


# ---------------------------------------------------------------------------------------------------
# Infinity: qkv_to_cache with RoPE (rope2d.apply_rope after the L2 norm and head_scale), and
# cached_attention at Infinity's scale 1 over L2-normalised queries and keys
# ---------------------------------------------------------------------------------------------------
def _rope_table(L, c, seed, device="cpu", pad=0):
    """(2, L, c/2) float32 cos/sin of random angles; pad > 0: a slice (2, L, c/2) of a (2, L + pad, c/2)
    table as the loop takes this scale's rows out of rope2d.rope_cache (strides of the whole table)."""
    angles = _randn(L + pad, c // 2, seed=seed) * 3
    table = torch.stack((angles.cos(), angles.sin()))
    return table[:, pad:].to(device)


def _schedule_rope(c, device="cpu"):
    """The rope table of a small Infinity schedule as rope2d builds it, and (offset, L) of each scale."""
    schedule = [(1, 1, 1), (1, 2, 2), (1, 3, 5), (1, 4, 6)]
    table = rope_cache(c, schedule, full_hw=(4, 6)).to(device)
    starts = list(itertools.accumulate([h * w for _, h, w in schedule]))
    scales = [(s - h * w, h * w) for s, (_, h, w) in zip(starts, schedule)]
    return table, scales


ROPE_HEAD_DIMS = [
    pytest.param(1, 2, id="c2"),          # one pair
    pytest.param(2, 32, id="c32-test-2b_flat"),  # tests/infinity_factory.py "2b_flat": 128 / 4
    pytest.param(2, 40, id="c40-partial-lanes"),
    pytest.param(2, 64, id="c64-test-2b"),  # tests/infinity_factory.py "2b": 128 / 2
    pytest.param(1, 128, id="c128-Infinity-2B"),  # 2048 / 16
    pytest.param(1, 256, id="c256-max"),
]


@pytest.mark.parametrize("l2_norm", [False, True], ids=["plain", "l2norm"])
@pytest.mark.parametrize("H,c", ROPE_HEAD_DIMS)
@pytest.mark.parametrize("B,L", [(1, 1), (2, 15), (3, 36)])
def test_qkv_to_cache_rope_matches_reference(device, device_name, dtype, B, L, H, c, l2_norm):
    if device_name == "emu" and B * L * H * c > 4096:
        _skip_on_emu(device_name, "smaller shapes cover every lane layout")
    Lmax, offset = L + 9, 5
    qkv, q_bias, v_bias, head_scale, k_cache, v_cache = _qkv_inputs(B, L, H, c, Lmax, dtype, device, l2_norm, seed=50)
    rope = _rope_table(L, c, seed=51, device=device, pad=3)
    assert not rope.is_contiguous()
    k_before, v_before = k_cache.clone(), v_cache.clone()
    q = ops.qkv_to_cache(qkv, q_bias, v_bias, head_scale, k_cache, v_cache, offset, rope)
    assert q.shape == (B, H, L, c) and q.dtype == dtype and q.is_contiguous()
    k_ref, v_ref = k_before.float(), v_before.float()
    q_ref = ref.qkv_to_cache(qkv.float(), q_bias.float(), v_bias.float(), head_scale, k_ref, v_ref, offset, rope)
    torch.testing.assert_close(q, q_ref.to(dtype), **tol(dtype))
    _assert_cache_write(k_cache, v_cache, k_before, v_before, k_ref.to(dtype), v_ref.to(dtype), offset, L, dtype)
    if l2_norm:  # a rotation keeps the norms: unit keys, queries of norm head_scale
        torch.testing.assert_close(k_cache[:, :, offset:offset + L].float().norm(dim=-1),
                                   torch.ones(B, H, L, device=device), **tol(dtype))
        torch.testing.assert_close(q.float().norm(dim=-1), head_scale.view(1, H, 1).expand(B, H, L), **tol(dtype))
    if dtype == torch.float32:
        # Bitwise: the rotation is rope2d.apply_rope on the op's own normalised float32 q, k (the same
        # four products and two sums, each rounded); without head_scale the whole op is elementwise.
        k_plain, v_plain = k_before.clone(), v_before.clone()
        q_plain = ops.qkv_to_cache(qkv, q_bias, v_bias, head_scale, k_plain, v_plain, offset)
        q_rot, k_rot = apply_rope(q_plain, k_plain[:, :, offset:offset + L], rope)
        assert torch.equal(q, q_rot) and torch.equal(k_cache[:, :, offset:offset + L], k_rot)
        assert torch.equal(v_cache, v_plain)
        if not l2_norm:
            assert torch.equal(q, q_ref) and torch.equal(k_cache, k_ref)
    if device_name != "cpu":
        k_cpu, v_cpu = k_before.cpu(), v_before.cpu()
        q_cpu = _cpu_ops().qkv_to_cache(qkv.cpu(), q_bias.cpu(), v_bias.cpu(),
                                        None if head_scale is None else head_scale.cpu(), k_cpu, v_cpu, offset,
                                        rope.cpu())
        torch.testing.assert_close(q.cpu(), q_cpu, **tol(dtype))
        torch.testing.assert_close(k_cache.cpu(), k_cpu, **tol(dtype))
        assert torch.equal(v_cache.cpu(), v_cpu)


def test_qkv_to_cache_rope_identity_and_quarter_turn(device):
    """Angle 0 leaves q, k as without rope (bitwise); angle pi/2 (cos 0, sin 1 exactly) maps each pair
    (x0, x1) to (-x1, x0)."""
    B, L, H, c = 2, 3, 2, 64
    args = _qkv_inputs(B, L, H, c, 8, torch.float32, device, True, seed=52)
    qkv, q_bias, v_bias, head_scale, k_cache, v_cache = args
    k0, v0 = k_cache.clone(), v_cache.clone()
    q_plain = ops.qkv_to_cache(qkv, q_bias, v_bias, head_scale, k0, v0, 2)
    zero = torch.stack((torch.ones(L, c // 2), torch.zeros(L, c // 2))).to(device)
    quarter = torch.stack((torch.zeros(L, c // 2), torch.ones(L, c // 2))).to(device)
    k1 = k_cache.clone()
    assert torch.equal(ops.qkv_to_cache(qkv, q_bias, v_bias, head_scale, k1, v_cache.clone(), 2, zero), q_plain)
    assert torch.equal(k1, k0)
    k2 = k_cache.clone()
    q_quarter = ops.qkv_to_cache(qkv, q_bias, v_bias, head_scale, k2, v_cache.clone(), 2, quarter)
    pairs = q_plain.view(B, H, L, c // 2, 2)
    assert torch.equal(q_quarter.view(B, H, L, c // 2, 2), torch.stack((-pairs[..., 1], pairs[..., 0]), -1))
    k_pairs = k0[:, :, 2:2 + L].reshape(B, H, L, c // 2, 2)
    assert torch.equal(k2[:, :, 2:2 + L].reshape(B, H, L, c // 2, 2),
                       torch.stack((-k_pairs[..., 1], k_pairs[..., 0]), -1))


@pytest.mark.parametrize("H,c", [(2, 64), (4, 32)], ids=["test-2b", "test-2b_flat"])
def test_infinity_self_attention_matches_ops(device, H, c):
    """Infinity's SelfAttention (var_fast/infinity/blocks.py) scale by scale with its rope table and a
    growing cache, against qkv_to_cache(rope) + cached_attention(scale=1) on a preallocated cache. float32
    only: the module runs in float32 as upstream's inference does (apply_rope promotes q, k to float32, so
    the module itself cannot run in 16 bits; the 16-bit op results are checked against the reference above)."""
    B, C, dtype = 2, H * c, torch.float32
    torch.manual_seed(1)
    attn = InfinitySelfAttention(C, H)
    with torch.no_grad():
        attn.q_bias.normal_(0, 0.5)
        attn.v_bias.normal_(0, 0.5)
        attn.scale_mul_1H11.add_(torch.randn(1, H, 1, 1) * 0.3)
    attn = attn.to(device=device, dtype=dtype)
    table, scales = _schedule_rope(c, device)
    Lmax = sum(L for _, L in scales)
    k_cache = torch.full((B, H, Lmax, c), float("nan"), dtype=dtype, device=device)
    v_cache = torch.full_like(k_cache, float("nan"))
    head_scale = attn.scale_mul_1H11.clamp_max(MAX_SCALE_MUL).exp().reshape(H)
    with torch.no_grad():
        for si, (offset, L) in enumerate(scales):
            x = _randn(B, L, C, seed=60 + si, dtype=dtype, device=device)
            rope = table[:, offset:offset + L]
            expected = attn(x, rope)
            qkv = F.linear(x, attn.mat_qkv.weight)
            q = ops.qkv_to_cache(qkv, attn.q_bias, attn.v_bias, head_scale, k_cache, v_cache, offset, rope)
            got = attn.proj(ops.cached_attention(q, k_cache, v_cache, offset + L, 1.0))
            torch.testing.assert_close(got, expected, **tol(dtype))
            torch.testing.assert_close(k_cache[:, :, :offset + L], attn.cached_k, **tol(dtype))
            torch.testing.assert_close(v_cache[:, :, :offset + L], attn.cached_v, **tol(dtype))


@pytest.mark.parametrize("B,H,L,c,kv_len", [
    pytest.param(2, 4, 15, 32, 50, id="c32-test-2b_flat"),
    pytest.param(2, 2, 36, 64, 91, id="c64-test-2b"),
    pytest.param(1, 2, 9, 128, 130, id="c128-Infinity-2B"),
    pytest.param(1, 1, 1, 128, 1, id="c128-first-scale"),
])
def test_cached_attention_infinity_scale_one(device, device_name, dtype, B, H, L, c, kv_len):
    """Infinity's self-attention: SDPA with scale 1 over L2-normalised queries (norm exp(scale_mul), 4 at
    initialisation, up to 100) and unit keys: logits up to +-head_scale."""
    q = F.normalize(_randn(B, H, L, c, seed=70), dim=-1) * torch.tensor([4.0, 30.0, 100.0, 8.0][:H]).view(1, H, 1, 1)
    k_cache = F.normalize(_randn(B, H, kv_len + 5, c, seed=71), dim=-1)
    k_cache[:, :, kv_len:] = float("nan")
    v_cache = _randn(B, H, kv_len + 5, c, seed=72)
    q, k_cache, v_cache = (t.to(device=device, dtype=dtype) for t in (q, k_cache, v_cache))
    out = ops.cached_attention(q, k_cache, v_cache, kv_len, 1.0)
    assert out.isfinite().all()
    torch.testing.assert_close(out, _reference_attention(q, k_cache, v_cache, kv_len, 1.0), **tol(dtype))
    if device_name != "cpu":
        cpu = _cpu_ops().cached_attention(q.cpu(), k_cache.cpu(), v_cache.cpu(), kv_len, 1.0)
        torch.testing.assert_close(out.cpu(), cpu, **tol(dtype))


def _rope_good():
    args = _qkv_good()  # B 2, L 5, H 3, c 64
    args["rope"] = _rope_table(5, 64, seed=53)
    return args


@pytest.mark.parametrize("value,message", [
    (torch.zeros(2, 5, 33), r"rope must have shape \(2, L, c/2\) = \(2, 5, 32\)"),
    (torch.zeros(2, 4, 32), r"rope must have shape \(2, L, c/2\) = \(2, 5, 32\)"),
    (torch.zeros(1, 5, 32), r"rope must have shape \(2, L, c/2\)"),
    (torch.zeros(5, 32), r"rope must have shape \(2, L, c/2\)"),
    (torch.zeros(2, 5, 32, dtype=torch.float64), r"rope must be float32 \(cos, sin\), got Double"),
    (torch.zeros(2, 5, 32, dtype=torch.bfloat16), r"rope must be float32"),
])
def test_qkv_to_cache_rope_errors(value, message):
    args = _rope_good()
    args["rope"] = value
    with pytest.raises(RuntimeError, match=message):
        ops.qkv_to_cache(**args)


def test_qkv_to_cache_rope_needs_even_head_dim():
    qkv, q_bias, v_bias, head_scale, k_cache, v_cache = _qkv_inputs(1, 2, 1, 63, 4, torch.float32, "cpu", True)
    with pytest.raises(RuntimeError, match=r"rope rotates pairs of head dims: the head dim \(k_cache.size\(3\)\) "
                                           r"must be even, got 63"):
        ops.qkv_to_cache(qkv, q_bias, v_bias, head_scale, k_cache, v_cache, 0, torch.zeros(2, 2, 31))


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_qkv_to_cache_rope_device_mismatch():
    args = {k: (v.cuda() if isinstance(v, torch.Tensor) else v) for k, v in _rope_good().items()}
    args["rope"] = args["rope"].cpu()
    with pytest.raises(RuntimeError, match=r"rope must be on cuda"):
        ops.qkv_to_cache(**args)


def test_qkv_to_cache_rope_opcheck(device, device_name):
    if device_name == "emu":
        pytest.skip("opcheck of var_fast_emu ops fails test_faketensor: fake kernels are registered for var_fast:: only")
    args = _rope_good()
    args = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in args.items()}
    torch.library.opcheck(torch.ops.var_fast.qkv_to_cache.default,
                          (args["qkv"], args["q_bias"], args["v_bias"], args["head_scale"], args["k_cache"],
                           args["v_cache"], args["offset"], args["rope"]))


@pytest.mark.emu
def test_emulated_capture_with_rope(emulated_gpu):
    """qkv_to_cache with rope reads the table in place (a strided slice, no copy): it runs under an emulated
    capture and gives the eager result."""
    qkv, q_bias, v_bias, head_scale, k_cache, v_cache = _qkv_inputs(2, 9, 2, 64, 20, torch.bfloat16, "cpu", True,
                                                                     seed=54)
    rope = _rope_table(9, 64, seed=55, pad=4)
    k_eager, v_eager = k_cache.clone(), v_cache.clone()
    q_eager = ops.qkv_to_cache(qkv, q_bias, v_bias, head_scale, k_eager, v_eager, 4, rope)
    with emulated_gpu.emulated_capture():
        q = ops.qkv_to_cache(qkv, q_bias, v_bias, head_scale, k_cache, v_cache, 4, rope)
    assert torch.equal(q, q_eager) and torch.equal(k_cache, k_eager) and torch.equal(v_cache, v_eager)

"""Calls every op of var_fast.ops once at a representative shape and once at an edge shape (odd
sizes, V = 1, a 1x1 scale), synchronizing after each: what compute-sanitizer watches. Far smaller
than the test suite, which is too slow under the sanitizer.

    compute-sanitizer --tool memcheck python -m benchmarks.gpu_check.sanitize_driver [--device cuda]
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Iterator, Tuple

import torch

DONE = "gpu-check sanitize driver: all cases ran"


def _randn(*shape, device, dtype=torch.float32, std=1.0):
    # drawn on the CPU and copied: only var_fast's kernels run on the GPU
    g = _randn.gen
    return (torch.randn(*shape, generator=g) * std).to(device=device, dtype=dtype)


_randn.gen = torch.Generator().manual_seed(0)


def _sampling(ops, device) -> Iterator[Tuple[str, str, Callable]]:
    for label, (B, L, V, k, p) in {"B2 L64 V4096 k900 p0.96": (2, 64, 4096, 900, 0.96),
                                   "B3 L7 V1": (3, 7, 1, 0, 0.0), "B1 L1 V37 k5": (1, 1, 37, 5, 0.5)}.items():
        logits = _randn(B, L, V, device=device, std=3)
        yield "sample_top_k_top_p", label, lambda x=logits, k=k, p=p: ops.sample_top_k_top_p(x, k, p, seed=1)
        doubled = _randn(2 * B, L, V, device=device, std=3)
        yield "sample_cfg_top_k_top_p", label, lambda x=doubled, k=k, p=p: ops.sample_cfg_top_k_top_p(x, 1.5, k, p, 2)


def _attention(ops, device) -> Iterator[Tuple[str, str, Callable]]:
    # (B, H, c, L, offset, Lmax): a d16 block at the 13x13 scale, and odd sizes down to one token
    for B, H, c, L, offset, Lmax in ((2, 16, 64, 169, 255, 680), (3, 3, 37, 5, 2, 9), (1, 1, 64, 1, 0, 1)):
        C = H * c
        for dtype in (torch.float32, torch.bfloat16):
            label = f"B{B} H{H} c{c} L{L} kv{offset + L} {str(dtype)[6:]}"
            x, y = _randn(B, L, C, device=device, dtype=dtype), _randn(B, L, C, device=device, dtype=dtype)
            scale, shift, gamma = (_randn(B, 1, C, device=device, dtype=dtype, std=0.5) for _ in range(3))
            yield "adaln_modulate", label, lambda: ops.adaln_modulate(x, scale, shift, 1e-6)
            yield "gated_residual", label, lambda: ops.gated_residual(x, y, gamma)
            yield "gated_residual_adaln", label, lambda: ops.gated_residual_adaln(x, y, gamma, scale, shift, 1e-6)
            bias = _randn(C, device=device, dtype=dtype)
            yield "bias_gelu", label, lambda: ops.bias_gelu(x, bias)
            qkv = _randn(B, L, 3 * C, device=device, dtype=dtype)
            q_bias, v_bias = _randn(C, device=device, dtype=dtype), _randn(C, device=device, dtype=dtype)
            k_cache = _randn(B, H, Lmax, c, device=device, dtype=dtype)
            v_cache = _randn(B, H, Lmax, c, device=device, dtype=dtype)
            head_scale = torch.full((H,), 4.0, device=device)
            for hs in (None, head_scale):
                yield ("qkv_to_cache", label + (" head_scale" if hs is not None else ""),
                       lambda hs=hs: ops.qkv_to_cache(qkv, q_bias, v_bias, hs, k_cache, v_cache, offset))
            if c % 2 == 0:  # Infinity's RoPE: a strided (2, L, c/2) float32 slice of a longer cos/sin table
                angles = _randn(L + 3, c // 2, device=device, dtype=torch.float32)
                rope = torch.stack((angles.cos(), angles.sin()))[:, 3:]
                yield ("qkv_to_cache", label + " head_scale rope",
                       lambda rope=rope: ops.qkv_to_cache(qkv, q_bias, v_bias, head_scale, k_cache, v_cache, offset,
                                                          rope))
            q = _randn(B, H, L, c, device=device, dtype=dtype)
            yield "cached_attention", label, lambda: ops.cached_attention(q, k_cache, v_cache, offset + L, c ** -0.5)


def _quant(ops, device) -> Iterator[Tuple[str, str, Callable]]:
    from var_fast.models.quantizer import phi_index
    # (B, C, V, patch_nums): the published VQVAE's codebook at 256 px, and odd sizes with V = 1 and a 1x1 scale
    for B, C, V, patch_nums in ((2, 32, 4096, (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)), (3, 7, 1, (1, 3, 5)),
                                (1, 5, 3, (1,))):
        label = f"B{B} C{C} V{V} scales {'-'.join(map(str, patch_nums))}"
        H = patch_nums[-1]
        codebook = _randn(V, C, device=device)
        z = _randn(B * H * H, C, device=device)
        yield "nearest_code", label, lambda: ops.nearest_code(z, codebook)
        f = _randn(B, C, H, H, device=device)
        small = _randn(B, C, patch_nums[0], patch_nums[0], device=device)
        yield "area_downsample", label, lambda: ops.area_downsample(f, patch_nums[0])
        yield "bicubic_upsample", label, lambda: ops.bicubic_upsample(small, H)
        K = 4
        weights, biases = _randn(K, C, C, 3, 3, device=device, std=0.1), _randn(K, C, device=device, std=0.1)
        yield "phi_blend", label, lambda: ops.phi_blend(f, weights[0], biases[0], 0.5)
        S = len(patch_nums)
        index = [phi_index(si, S, K) for si in range(S)] if S > 1 else [0]
        f_hat = torch.zeros(B, C, H, H, device=device)
        for si, pn in enumerate(patch_nums):
            tokens = torch.randint(0, V, (B, pn * pn), generator=_randn.gen).to(device)
            nxt = patch_nums[si + 1] if si + 1 < S else 0
            yield ("quant_sampler_step", f"{label} scale {si}",
                   lambda t=tokens, k=index[si], n=nxt: ops.quant_sampler_step(t, codebook, f_hat, weights[k],
                                                                                biases[k], 0.5, n))
        yield "quant_encode", label, lambda: ops.quant_encode(f, codebook, weights, biases, index, 0.5, patch_nums)


def _infinity(ops, device) -> Iterator[Tuple[str, str, Callable]]:
    """Infinity's ops: bitwise sampling (Infinity-2B's 32 bits over a 64x64 scale, and an odd D with a partial
    group of 4 bits) and the BSQ update (the 1M 1:1 schedule's last two scales, an odd d, patchify)."""
    for label, (B, L, D, k, p) in {"B2 L4096 D32 k900 p0.97": (2, 4096, 32, 900, 0.97),
                                   "B3 L7 D5 k1": (3, 7, 5, 1, 0.0), "B1 L1 D1": (1, 1, 1, 0, 0.5)}.items():
        logits = _randn(B, L, 2 * D, device=device, std=3)
        yield "sample_bits", label, lambda x=logits, k=k, p=p: ops.sample_bits(x, 0.5, k, p, seed=1)
        doubled = _randn(2 * B, L, 2 * D, device=device, std=3)
        yield "sample_cfg_bits", label, lambda x=doubled, k=k, p=p: ops.sample_cfg_bits(x, 3.0, 1.0, k, p, seed=2)
    # (B, d, scale (h, w), final (H, W), next (h, w), patchify)
    for B, d, (h, w), (H, W), nxt, patchify in ((2, 32, (48, 48), (64, 64), (64, 64), False),
                                                (2, 32, (64, 64), (64, 64), (0, 0), False),
                                                (3, 5, (3, 5), (7, 9), (4, 6), False),
                                                (1, 7, (2, 3), (8, 10), (6, 8), True)):
        D = 4 * d if patchify else d
        label = f"B{B} d{d} {h}x{w} -> {H}x{W} next {nxt[0]}x{nxt[1]}" + (" patchify" if patchify else "")
        bits = torch.randint(0, 2, (B, h, w, D), generator=_randn.gen).to(device)
        summed = torch.zeros(B, d, H, W, device=device)
        yield ("bsq_scale_update", label,
               lambda b=bits, s=summed, n=nxt, p=patchify: ops.bsq_scale_update(b, s, n[0], n[1], p))


def _status(ops, device) -> Iterator[Tuple[str, str, Callable]]:
    """The device status word: a NaN row and out-of-range tokens set flags instead of syncing (the
    kernels must stay in bounds); check_status reads a word once."""
    status = ops.new_status(device)
    logits = _randn(2, 3, 50, device=device)
    logits[1, 2, 7] = float("nan")
    V, C, H = 9, 5, 4
    codebook = _randn(V, C, device=device)
    f_hat = torch.zeros(1, C, H, H, device=device)
    weight, bias = _randn(C, C, 3, 3, device=device, std=0.1), _randn(C, device=device, std=0.1)
    bad_tokens = torch.tensor([[-3, V, 2, V + 100]], device=device)
    yield "new_status", "B1", lambda: ops.new_status(device)
    yield "sample_top_k_top_p", "status NaN row", lambda: ops.sample_top_k_top_p(logits, 5, 0.9, seed=1, status=status)
    yield ("quant_sampler_step", "status tokens out of range",
           lambda: ops.quant_sampler_step(bad_tokens, codebook, f_hat, weight, bias, 0.5, 2, status=status))
    bad_bits = torch.tensor([[[[0, 2, 1]]]], device=device)
    yield ("bsq_scale_update", "status bits out of range",
           lambda: ops.bsq_scale_update(bad_bits, torch.zeros(1, 3, 2, 2, device=device), 2, 2, False, status=status))
    yield "sample_cfg_bits", "status NaN pair", lambda: ops.sample_cfg_bits(logits, 3.0, 1.0, seed=1, status=status)
    yield "check_status", "clean word", lambda: ops.check_status(ops.new_status(device), V)


def cases(device: str):
    from var_fast import ops
    for family in (_sampling, _attention, _quant, _infinity, _status):
        yield from family(ops, device)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args(argv)
    covered = set()
    for op, label, call in cases(args.device):
        call()
        if args.device == "cuda":
            torch.cuda.synchronize()  # an asynchronous fault is reported at the op that caused it
        covered.add(op)
        print(f"ok {op} [{label}]", flush=True)
    print(f"{DONE}: {len(covered)} ops", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

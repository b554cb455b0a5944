"""The four Infinity-specific steps of the fast loop (var_fast/infinity/fast_sampler.py), in one place.

Each function has the signature of the native op agreed in INFINITY_FAST_PLAN.md (issue 24). Where the op is
not in this tree yet, the function computes the op's reference formula in plain PyTorch (the formulas of
reference_sampler.py's loop); switching to the op is the one line marked ``NATIVE`` in each function.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .rope2d import apply_rope

_MASK64 = (1 << 64) - 1


# ---- self-attention: QKV epilogue with RoPE into the KV cache (s3-rope: ops.qkv_to_cache(..., rope=)) -----------
def qkv_to_cache(qkv: torch.Tensor, q_bias: torch.Tensor, v_bias: torch.Tensor, head_scale: torch.Tensor,
                 k_cache: torch.Tensor, v_cache: torch.Tensor, offset: int, rope: torch.Tensor) -> torch.Tensor:
    """qkv (B, L, 3C) of the bias-free QKV GEMM -> q (B, H, L, c): bias added, q and k L2-normalised per head,
    q times head_scale (H,), both rotated by ``rope`` (2, L, c/2); k and v written at ``offset`` of the caches."""
    # NATIVE: return ops.qkv_to_cache(qkv, q_bias, v_bias, head_scale, k_cache, v_cache, offset, rope=rope)
    B, L, _ = qkv.shape
    _, H, _, c = k_cache.shape
    qkv = qkv.add(torch.cat((q_bias, torch.zeros_like(q_bias), v_bias))).view(B, L, 3, H, c)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    q = F.normalize(q, dim=-1, eps=1e-12).mul(head_scale.reshape(1, H, 1, 1))
    k = F.normalize(k, dim=-1, eps=1e-12)
    q, k = apply_rope(q, k, rope)
    k_cache[:, :, offset:offset + L] = k
    v_cache[:, :, offset:offset + L] = v
    return q.to(qkv.dtype).contiguous()


# ---- cross-attention to the text (s3-rope: var_fast/infinity/fast_cross_attention.py) -------------------------
def prepare_text_kv(k: torch.Tensor, v: torch.Tensor, lens: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Projected text keys/values (sum(lens), H, c) of one block -> what ``cross_attention`` takes, once per
    call: rounded to bfloat16 (as upstream's float32 call into flash attention rounds them) and back."""
    return k.to(torch.bfloat16).float(), v.to(torch.bfloat16).float()


def cross_attention(q: torch.Tensor, text_kv: Tuple[torch.Tensor, torch.Tensor], lens: Sequence[int],
                    scale: float) -> torch.Tensor:
    """q (N, L, H, c) of N image rows, text_kv from ``prepare_text_kv`` (row i attends to prompt i's lens[i]
    tokens) -> (N, L, H*c) float32, rounded to bfloat16 as blocks.varlen_attention."""
    k, v = text_kv
    N, L, H, c = q.shape
    q = q.to(torch.bfloat16).float()
    out = []
    start = 0
    for i, n in enumerate(lens):
        qi = q[i].transpose(0, 1).unsqueeze(0)                        # 1, H, L, c
        ki = k[start:start + n].transpose(0, 1).unsqueeze(0)
        vi = v[start:start + n].transpose(0, 1).unsqueeze(0)
        out.append(F.scaled_dot_product_attention(qi, ki, vi, scale=scale)[0].transpose(0, 1))
        start += n
    return torch.stack(out, 0).to(torch.bfloat16).float().reshape(N, L, H * c)


# ---- bitwise sampling (s3-bitwise: ops.sample_bits / ops.sample_cfg_bits) --------------------------------------
def _image_generator(seed: int, image: int, device) -> torch.Generator:
    z = (seed * 0x9E3779B97F4A7C15 + (image + 1) * 0xD6E8FEB86659FD93) & _MASK64
    z = ((z ^ (z >> 31)) * 0xBF58476D1CE4E5B9) & _MASK64
    return torch.Generator(device=device).manual_seed((z ^ (z >> 29)) & ((1 << 63) - 1))


def _filter_and_draw(l: torch.Tensor, top_k: int, top_p: float, seed: int, image_offset: int) -> torch.Tensor:
    """l (B, L, D, 2) float32 -> bits (B, L, D): upstream's top-k/top-p on each pair, then one draw per bit
    from a stream of (seed, image_offset + b) (the fallback's stream; the native op's is Philox)."""
    if top_k > 0:
        k = min(top_k, 2)
        l = l.masked_fill(l < l.topk(k, dim=-1, largest=True, sorted=False)[0].amin(dim=-1, keepdim=True), -torch.inf)
    if top_p > 0:
        sorted_l, sorted_idx = l.sort(dim=-1, descending=False)
        remove = sorted_l.softmax(dim=-1).cumsum_(dim=-1) <= (1 - top_p)
        remove[..., -1:] = False
        l = l.masked_fill(remove.scatter(-1, sorted_idx, remove), -torch.inf)
    p1 = l.softmax(dim=-1)[..., 1]
    u = torch.stack([torch.rand(p1.shape[1:], generator=_image_generator(seed, image_offset + b, p1.device),
                                device=p1.device) for b in range(p1.shape[0])])
    return (u < p1).long()


def _check_finite(l: torch.Tensor, cfg: bool, status: Optional[torch.Tensor]) -> None:
    """Bad logits (NaN, +inf, a bit with both logits -inf) raise, or with ``status`` OR the flags of
    csrc/include/var_fast/status_flags.h into it without waiting for the device (ops.check_status raises)."""
    flags = (torch.isnan(l).any().int() * 1 + torch.isposinf(l).any().int() * 2
             + (l == -torch.inf).all(dim=-1).any().int() * 4)
    if status is not None:
        status.bitwise_or_(flags | (flags != 0).int() * 8 if cfg else flags)  # 8: kSampleCfg
        return
    bad = int(flags)
    if bad:
        what = "NaN" if bad & 1 else "+inf" if bad & 2 else "a bit with both logits -inf"
        raise RuntimeError(f"{'sample_cfg_bits' if cfg else 'sample_bits'}: logits contain {what}")


def sample_bits(logits: torch.Tensor, tau: float, top_k: int = 0, top_p: float = 0.0, seed: int = 0,
                image_offset: int = 0, status: Optional[torch.Tensor] = None) -> torch.Tensor:
    """logits (B, L, 2D) -> int64 bits (B, L, D) of softmax(logits * (1/tau)) per pair, filtered."""
    # NATIVE: return ops.sample_bits(logits, tau, top_k, top_p, seed, image_offset, status)
    B, L, V = logits.shape
    l = logits.float().mul(1 / tau).reshape(B, L, V // 2, 2)
    _check_finite(l, False, status)
    return _filter_and_draw(l, top_k, top_p, seed, image_offset)


def sample_cfg_bits(logits: torch.Tensor, cfg: float, tau: float, top_k: int = 0, top_p: float = 0.0, seed: int = 0,
                    image_offset: int = 0, status: Optional[torch.Tensor] = None) -> torch.Tensor:
    """logits (2B, L, 2D) [conditional; unconditional] -> bits (B, L, D) of cfg * c + (1 - cfg) * u (each
    scaled by 1/tau first), as upstream mixes them."""
    # NATIVE: return ops.sample_cfg_bits(logits, cfg, tau, top_k, top_p, seed, image_offset, status)
    N, L, V = logits.shape
    B = N // 2
    l = logits.float().mul(1 / tau)
    l = (cfg * l[:B] + (1 - cfg) * l[B:]).reshape(B, L, V // 2, 2)
    _check_finite(l, True, status)
    return _filter_and_draw(l, top_k, top_p, seed, image_offset)


# ---- the BSQ per-scale update (s3-bsq: ops.bsq_scale_update) -----------------------------------------------------
def bsq_scale_update(bits: torch.Tensor, summed_codes: torch.Tensor, next_h: int, next_w: int, patchify: bool,
                     status: Optional[torch.Tensor] = None) -> torch.Tensor:
    """bits (B, h, w, D) -> codes added into summed_codes (B, d, H, W) in place; returns the next scale's
    transformer input (B, next_h * next_w, d or 4d) (empty when next_h == 0)."""
    # NATIVE: return ops.bsq_scale_update(bits, summed_codes, next_h, next_w, patchify, status)
    if bool(((bits != 0) & (bits != 1)).any()):
        raise RuntimeError("bsq_scale_update: bits outside {0, 1}")
    B, d, H, W = summed_codes.shape
    if patchify:
        bits = F.pixel_shuffle(bits.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
    s = 1 / np.sqrt(d)  # BSQ.codebook_scale: a numpy float64, as upstream
    codes = F.normalize(bits.unsqueeze(1) * s * 2 - s, dim=-1).movedim(-1, 1)   # (B, d, 1, h', w')
    grid = summed_codes.unsqueeze(2)
    if codes.shape[-2:] != (H, W):
        codes = F.interpolate(codes, size=(1, H, W), mode="trilinear")
    grid += codes
    if not next_h:
        return summed_codes.new_empty(0)
    vh, vw = (2 * next_h, 2 * next_w) if patchify else (next_h, next_w)
    nxt = F.interpolate(grid, size=(1, vh, vw), mode="trilinear").squeeze(-3)
    if patchify:
        nxt = F.pixel_unshuffle(nxt, 2)
    return nxt.reshape(*nxt.shape[:2], -1).permute(0, 2, 1)


def scale_bits_layout(bits: torch.Tensor, h: int, w: int, patchify: bool) -> torch.Tensor:
    """The loop's bits (B, h*w, D) of one scale -> (B, 1, h', w', d) as InfinityOutput.bits holds them."""
    B = bits.shape[0]
    idx = bits.reshape(B, h, w, -1)
    if patchify:
        idx = F.pixel_shuffle(idx.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
    return idx.unsqueeze(1)


__all__: List[str] = ["bsq_scale_update", "cross_attention", "prepare_text_kv", "qkv_to_cache", "sample_bits",
                      "sample_cfg_bits", "scale_bits_layout"]

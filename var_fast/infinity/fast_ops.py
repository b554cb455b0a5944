"""The four Infinity-specific steps of the fast loop (var_fast/infinity/fast_sampler.py), in one place.

Each function has the signature of the native op agreed in INFINITY_FAST_PLAN.md (issue 24): the QKV epilogue
with RoPE (ops.qkv_to_cache) and the bit draws (ops.sample_bits / ops.sample_cfg_bits) call the ops. Where the op
is not in this tree yet (the BSQ update, the batched cross-attention), the function computes the op's reference
formula in plain PyTorch (the formulas of reference_sampler.py's loop); switching to the op is the one line
marked ``NATIVE``.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .. import ops


# ---- self-attention: QKV epilogue with RoPE into the KV cache (s3-rope: ops.qkv_to_cache(..., rope=)) -----------
def qkv_to_cache(qkv: torch.Tensor, q_bias: torch.Tensor, v_bias: torch.Tensor, head_scale: torch.Tensor,
                 k_cache: torch.Tensor, v_cache: torch.Tensor, offset: int, rope: torch.Tensor) -> torch.Tensor:
    """qkv (B, L, 3C) of the bias-free QKV GEMM -> q (B, H, L, c): bias added, q and k L2-normalised per head,
    q times head_scale (H,), both rotated by ``rope`` (2, L, c/2); k and v written at ``offset`` of the caches."""
    return ops.qkv_to_cache(qkv, q_bias, v_bias, head_scale, k_cache, v_cache, offset, rope=rope)


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
def sample_bits(logits: torch.Tensor, tau: float, top_k: int = 0, top_p: float = 0.0, seed: int = 0,
                image_offset: int = 0, status: Optional[torch.Tensor] = None) -> torch.Tensor:
    """logits (B, L, 2D) -> int64 bits (B, L, D) of softmax(logits * (1/tau)) per pair, filtered."""
    return ops.sample_bits(logits, tau, top_k, top_p, seed, image_offset, status)


def sample_cfg_bits(logits: torch.Tensor, cfg: float, tau: float, top_k: int = 0, top_p: float = 0.0, seed: int = 0,
                    image_offset: int = 0, status: Optional[torch.Tensor] = None) -> torch.Tensor:
    """logits (2B, L, 2D) [conditional; unconditional] -> bits (B, L, D) of cfg * c + (1 - cfg) * u (each
    scaled by 1/tau first), as upstream mixes them."""
    return ops.sample_cfg_bits(logits, cfg, tau, top_k, top_p, seed, image_offset, status)


# ---- the BSQ per-scale update (s3-bsq: ops.bsq_scale_update) -----------------------------------------------------
def bsq_scale_update(bits: torch.Tensor, summed_codes: torch.Tensor, next_h: int, next_w: int, patchify: bool,
                     status: Optional[torch.Tensor] = None) -> torch.Tensor:
    """bits (B, h, w, D) -> codes added into summed_codes (B, d, H, W) in place; returns the next scale's
    transformer input (B, next_h * next_w, d or 4d) (empty when next_h == 0)."""
    # NATIVE: return ops.bsq_scale_update(bits, summed_codes, next_h, next_w, patchify, status)
    if status is None and bool(((bits != 0) & (bits != 1)).any()):  # with status: the loop's bits are 0/1 already
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

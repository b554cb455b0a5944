"""The four Infinity-specific steps of the fast loop (var_fast/infinity/fast_sampler.py), in one place.

Each function has the signature of the native op agreed for issue 24 (Infinity fast path) and calls it: the
QKV epilogue with RoPE (ops.qkv_to_cache), the bit draws (ops.sample_bits / ops.sample_cfg_bits), the BSQ update
(ops.bsq_scale_update); the cross-attention is var_fast/infinity/fast_cross_attention.py. The loop calls these
names only, so a replacement (another kernel, a reference formula while debugging) is one line here.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F

from .. import ops
from .fast_cross_attention import TextKV, attend, choose_variant


# ---- self-attention: QKV epilogue with RoPE into the KV cache (s3-rope: ops.qkv_to_cache(..., rope=)) -----------
def qkv_to_cache(qkv: torch.Tensor, q_bias: torch.Tensor, v_bias: torch.Tensor, head_scale: torch.Tensor,
                 k_cache: torch.Tensor, v_cache: torch.Tensor, offset: int, rope: torch.Tensor) -> torch.Tensor:
    """qkv (B, L, 3C) of the bias-free QKV GEMM -> q (B, H, L, c): bias added, q and k L2-normalised per head,
    q times head_scale (H,), both rotated by ``rope`` (2, L, c/2); k and v written at ``offset`` of the caches."""
    return ops.qkv_to_cache(qkv, q_bias, v_bias, head_scale, k_cache, v_cache, offset, rope=rope)


# ---- cross-attention to the text (s3-rope: var_fast/infinity/fast_cross_attention.py) -------------------------
def prepare_text_kv(k: torch.Tensor, v: torch.Tensor, lens: Sequence[int]) -> TextKV:
    """Projected text keys/values (sum(lens), H, c) of one block -> what ``cross_attention`` takes, once per
    call: rounded to bfloat16 (as upstream's float32 call into flash attention rounds them), padded per prompt."""
    return TextKV.from_compact(k, v, lens)


def cross_attention(q: torch.Tensor, text_kv: TextKV, scale: float) -> torch.Tensor:
    """q (N, L, C) projected queries of N image rows (row i attends to prompt i's tokens) -> (N, L, C) float32,
    bfloat16 values as blocks.varlen_attention."""
    return attend(q, text_kv, scale, choose_variant(q.device))


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
    transformer input (B, L, d or 4d) on the next scale's VAE grid next_h x next_w (empty when next_h == 0)."""
    return ops.bsq_scale_update(bits, summed_codes, next_h, next_w, patchify, status)


def scale_bits_layout(bits: torch.Tensor, h: int, w: int, patchify: bool) -> torch.Tensor:
    """The loop's bits (B, h*w, D) of one scale -> (B, 1, h', w', d) as InfinityOutput.bits holds them."""
    B = bits.shape[0]
    idx = bits.reshape(B, h, w, -1)
    if patchify:
        idx = F.pixel_shuffle(idx.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
    return idx.unsqueeze(1)


__all__: List[str] = ["bsq_scale_update", "cross_attention", "prepare_text_kv", "qkv_to_cache", "sample_bits",
                      "sample_cfg_bits", "scale_bits_layout"]

"""Plain-PyTorch references of the AdaLN-modulated attention ops (``var_fast.ops``).

Each function spells out the upstream arithmetic of one piece of ``var_fast/models/blocks.py``
(FoundationVision/VAR ``AdaLNSelfAttn`` / ``SelfAttention``) with the fast ops' signatures:
the same torch ops in the same order, in the inputs' dtype. The fast ops compute in float32 and
round once, so in float16/bfloat16 they agree with these up to the dtype's rounding.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ..infinity.rope2d import apply_rope


def adaln_modulate(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``ln_wo_grad(x).mul(scale.add(1)).add_(shift)``: LayerNorm without affine over the last dim."""
    return F.layer_norm(x, x.shape[-1:], eps=eps).mul(scale.add(1)).add_(shift)


def qkv_to_cache(qkv: torch.Tensor, q_bias: torch.Tensor, v_bias: torch.Tensor, head_scale: Optional[torch.Tensor],
                 k_cache: torch.Tensor, v_cache: torch.Tensor, offset: int,
                 rope: Optional[torch.Tensor] = None) -> torch.Tensor:
    """qkv (B, L, 3C) of the bias-free QKV GEMM -> q (B, H, L, c); k, v copied into the caches at ``offset``.

    Upstream adds ``cat(q_bias, zero_k_bias, v_bias)`` inside ``F.linear``; here it is added to the
    bias-free product. With ``head_scale`` (the attn_l2_norm models) q and k are ``F.normalize``d per
    head and q is multiplied by head_scale (``scale_mul_1H11.clamp_max(log 100).exp()``). With ``rope``
    (2, L, c/2) float32 (Infinity's SelfAttention.forward), q and k are then rotated by
    ``infinity.rope2d.apply_rope``.
    """
    B, L, three_C = qkv.shape
    _, H, _, c = k_cache.shape
    bias = torch.cat((q_bias, torch.zeros_like(q_bias), v_bias))
    qkv = qkv.add(bias).view(B, L, 3, H, c)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each B, H, L, c
    if head_scale is not None:
        q = F.normalize(q, dim=-1).mul(head_scale.reshape(1, H, 1, 1))
        k = F.normalize(k, dim=-1)
    if rope is not None:
        q, k = apply_rope(q, k, rope)
    k_cache[:, :, offset:offset + L] = k
    v_cache[:, :, offset:offset + L] = v
    return q.to(qkv.dtype).contiguous()


def cached_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, kv_len: int,
                     scale: float) -> torch.Tensor:
    """SDPA of q (B, H, L, c) over the first ``kv_len`` cached keys (no mask) -> (B, L, H*c)."""
    B, H, L, c = q.shape
    out = F.scaled_dot_product_attention(q, k_cache[:, :, :kv_len], v_cache[:, :, :kv_len], scale=scale)
    return out.transpose(1, 2).reshape(B, L, H * c)


def gated_residual(x: torch.Tensor, y: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """``x + y.mul(gamma)``: the gated residual of both AdaLN sub-blocks."""
    return x + y.mul(gamma)


def gated_residual_adaln(x: torch.Tensor, y: torch.Tensor, gamma: torch.Tensor, scale: torch.Tensor,
                         shift: torch.Tensor, eps: float = 1e-6):
    """The two upstream steps the fused op replaces: ``x = x + y.mul(gamma)`` (the end of one AdaLN
    sub-block) and ``ln_wo_grad(x).mul(scale.add(1)).add_(shift)`` (the start of the next)."""
    out = gated_residual(x, y, gamma)
    return out, adaln_modulate(out, scale, shift, eps)


def bias_gelu(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``FFN.act(fc1(h))`` split after the bias-free GEMM: GELU(approximate='tanh') of x + bias."""
    return F.gelu(x + bias, approximate="tanh")

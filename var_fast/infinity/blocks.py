"""Infinity's transformer blocks with upstream's parameter names (infinity/models/basic.py at 4c27bbb):
cosine self-attention with 2-D RoPE and a KV cache, cross-attention to the text tokens, AdaLN.

Numerics follow upstream's inference path as run_infinity.py builds it (fused_norm=True, no
customized flash attention): adaptive norms are ``layer_norm(x) * (1 + scale) + shift`` in float32,
self-attention is PyTorch SDPA, and cross-attention rounds q, k, v and its output to bfloat16 as
upstream's float32 call into flash_attn_varlen_kvpacked_func does (see ``varlen_attention``).
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .rope2d import apply_rope

# torch.log(torch.tensor(100)).item(): the cap of the learnable attention temperature (float32 value)
MAX_SCALE_MUL = torch.log(torch.tensor(100)).item()


class RMSNorm(nn.Module):
    """Upstream FastRMSNorm (its PyTorch fallback): x * rsqrt(mean(x^2) + eps) * weight, in float32."""

    def __init__(self, C: int, eps: float = 1e-6, elementwise_affine: bool = True):
        super().__init__()
        self.C, self.eps = C, eps
        if elementwise_affine:
            self.weight = nn.Parameter(torch.ones(C))
        else:
            self.register_buffer("weight", torch.ones(C))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        src = x.dtype
        x = x.float()
        return ((x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True).add_(self.eps))) * self.weight).to(src)


def ada_norm(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, rms: bool, eps: float) -> torch.Tensor:
    """Upstream fused_ada_layer_norm / fused_ada_rms_norm (infinity/models/fused_op.py)."""
    x = x.float()
    if rms:
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True).add_(eps))
    else:
        x = F.layer_norm(x, (x.shape[-1],), None, None, eps)
    return x.mul(scale.add(1)).add_(shift)


def varlen_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lens_q: Sequence[int],
                     lens_k: Sequence[int], scale: float) -> torch.Tensor:
    """Variable-length attention of packed sequences, as upstream's float32 cross-attention calls flash
    attention: inputs rounded to bfloat16, attention in float32, output rounded to bfloat16.

    q: (sum(lens_q), H, c); k, v: (sum(lens_k), H, c) -> (sum(lens_q), H, c) float32.
    """
    q, k, v = (t.to(torch.bfloat16).float() for t in (q, k, v))
    out = []
    oq = ok = 0
    for lq, lk in zip(lens_q, lens_k):
        qi = q[oq:oq + lq].transpose(0, 1).unsqueeze(0)              # 1, H, lq, c
        ki = k[ok:ok + lk].transpose(0, 1).unsqueeze(0)
        vi = v[ok:ok + lk].transpose(0, 1).unsqueeze(0)
        out.append(F.scaled_dot_product_attention(qi, ki, vi, scale=scale)[0].transpose(0, 1))
        oq, ok = oq + lq, ok + lk
    return torch.cat(out, 0).to(torch.bfloat16).float()


class SelfAttention(nn.Module):
    def __init__(self, embed_dim: int, num_heads: int):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, embed_dim // num_heads
        self.scale_mul_1H11 = nn.Parameter(torch.full((1, num_heads, 1, 1), 4.0).log())
        self.mat_qkv = nn.Linear(embed_dim, embed_dim * 3, bias=False)
        self.q_bias, self.v_bias = nn.Parameter(torch.zeros(embed_dim)), nn.Parameter(torch.zeros(embed_dim))
        self.register_buffer("zero_k_bias", torch.zeros(embed_dim))
        self.proj = nn.Linear(embed_dim, embed_dim)
        self.cached_k: Optional[torch.Tensor] = None
        self.cached_v: Optional[torch.Tensor] = None

    def reset_cache(self) -> None:
        self.cached_k = self.cached_v = None

    def forward(self, x: torch.Tensor, rope: Optional[torch.Tensor]) -> torch.Tensor:
        """x: (B, L, C) the tokens of one scale; attends to the cached keys of all earlier scales."""
        B, L, C = x.shape
        bias = torch.cat((self.q_bias, self.zero_k_bias, self.v_bias))
        qkv = F.linear(x, self.mat_qkv.weight, bias).view(B, L, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(dim=0)
        scale_mul = self.scale_mul_1H11.clamp_max(MAX_SCALE_MUL).exp()
        q = F.normalize(q, dim=-1, eps=1e-12).mul(scale_mul).contiguous()
        k = F.normalize(k, dim=-1, eps=1e-12).contiguous()
        v = v.contiguous()
        if rope is not None:
            q, k = apply_rope(q, k, rope)
        if self.cached_k is None:
            self.cached_k, self.cached_v = k, v
        else:
            k = self.cached_k = torch.cat((self.cached_k, k), dim=2)
            v = self.cached_v = torch.cat((self.cached_v, v), dim=2)
        oup = F.scaled_dot_product_attention(q, k, v, scale=1, dropout_p=0).transpose(1, 2).reshape(B, L, C)
        return self.proj(oup)


class CrossAttention(nn.Module):
    """Attention from image tokens (or, for the text pool, one learned query) to the text tokens."""

    def __init__(self, embed_dim: int, kv_dim: int, num_heads: int, for_attn_pool: bool = False):
        super().__init__()
        self.for_attn_pool = for_attn_pool
        self.num_heads, self.head_dim = num_heads, embed_dim // num_heads
        self.scale = 1 / math.sqrt(self.head_dim)
        if for_attn_pool:
            self.mat_q = nn.Parameter(torch.zeros(1, num_heads, self.head_dim))
        else:
            self.mat_q = nn.Linear(embed_dim, embed_dim, bias=True)
        self.mat_kv = nn.Linear(kv_dim, embed_dim * 2, bias=False)
        self.v_bias = nn.Parameter(torch.zeros(embed_dim))
        self.register_buffer("zero_k_bias", torch.zeros(embed_dim))
        self.proj = nn.Linear(embed_dim, embed_dim)

    def project_kv(self, text: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        N = text.shape[0]
        kv = F.linear(text, self.mat_kv.weight, torch.cat((self.zero_k_bias, self.v_bias)))
        kv = kv.view(N, 2, self.num_heads, self.head_dim)
        return kv[:, 0], kv[:, 1]

    def forward(self, q: Optional[torch.Tensor], kv: Tuple[torch.Tensor, torch.Tensor], lens: List[int]) -> torch.Tensor:
        """q: (B, Lq, C) (None for the pool); kv: projected keys/values (sum(lens), H, c)."""
        k, v = kv
        if self.for_attn_pool:
            B, Lq = len(lens), 1
            q_compact = self.mat_q.repeat(B, 1, 1).to(dtype=k.dtype)
        else:
            B, Lq = q.shape[:2]
            q_compact = self.mat_q(q).view(-1, self.num_heads, self.head_dim)
        oup = varlen_attention(q_compact, k, v, [Lq] * B, lens, self.scale).reshape(B, Lq, -1)
        return self.proj(oup)


class TextAttentivePool(nn.Module):
    def __init__(self, text_channels: int, embed_dim: int, num_heads: int):
        super().__init__()
        self.ca = CrossAttention(embed_dim, text_channels, num_heads, for_attn_pool=True)

    def forward(self, text: torch.Tensor, lens: List[int]) -> torch.Tensor:
        return self.ca(None, self.ca.project_kv(text), lens).squeeze(1)


class FFN(nn.Module):
    def __init__(self, C: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(C, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class FFNSwiGLU(nn.Module):
    def __init__(self, C: int, hidden: int):
        super().__init__()
        self.fcg = nn.Linear(C, hidden, bias=False)
        self.fc1 = nn.Linear(C, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, C, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.silu(self.fcg(x), inplace=True).mul_(self.fc1(x)))


class CrossAttnBlock(nn.Module):
    def __init__(self, C: int, num_heads: int, mlp_hidden: int, *, shared_aln: bool, swiglu: bool, rms_norm: bool,
                 ca_gamma: bool, eps: float):
        super().__init__()
        self.C, self.rms, self.eps = C, rms_norm, eps
        self.sa = SelfAttention(C, num_heads)
        self.ca = CrossAttention(C, C, num_heads)
        self.ffn = (FFNSwiGLU if swiglu else FFN)(C, mlp_hidden)
        if rms_norm:  # FastRMSNorm(elementwise_affine=False) keeps its weight as a (persistent) buffer
            self.ln_wo_grad = RMSNorm(C, eps, elementwise_affine=False)
            self.ca_norm = RMSNorm(C, eps)
        else:
            self.ln_wo_grad = nn.LayerNorm(C, eps=eps, elementwise_affine=False)
            self.ca_norm = nn.LayerNorm(C, eps=eps)
        self.shared_aln = shared_aln
        if shared_aln:
            self.ada_gss = nn.Parameter(torch.zeros(1, 1, 6, C))
        else:
            self.ada_lin = nn.Sequential(nn.SiLU(inplace=False), nn.Linear(C, 6 * C))
        if ca_gamma:
            self.ca_gamma = nn.Parameter(torch.ones(C))
        else:
            self.ca_gamma = 1

    def forward(self, x: torch.Tensor, cond: torch.Tensor, ca_kv, lens: List[int], rope: Optional[torch.Tensor]) -> torch.Tensor:
        """cond: (B, 1, 6, C) the shared gamma/scale/shift (shared AdaLN) or (B, D) the text condition."""
        with torch.autocast(x.device.type, enabled=False):  # upstream: the AdaLN parameters never under autocast
            if self.shared_aln:
                g1, g2, s1, s2, sh1, sh2 = (self.ada_gss + cond).unbind(2)
            else:
                g1, g2, s1, s2, sh1, sh2 = self.ada_lin(cond).view(-1, 1, 6, self.C).unbind(2)
        x_sa = self.sa(ada_norm(x, s1, sh1, self.rms, self.eps), rope)
        x = x + x_sa.mul_(g1)
        x = x + self.ca(self.ca_norm(x), ca_kv, lens).float().mul_(self.ca_gamma)
        x = x + self.ffn(ada_norm(x, s2, sh2, self.rms, self.eps)).mul(g2)
        return x


class AdaLNBeforeHead(nn.Module):
    def __init__(self, C: int, D: int, rms_norm: bool, eps: float):
        super().__init__()
        self.C, self.rms, self.eps = C, rms_norm, eps
        if rms_norm:
            self.ln_wo_grad = RMSNorm(C, eps, elementwise_affine=False)
        else:
            self.ln_wo_grad = nn.LayerNorm(C, eps=eps, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(inplace=False), nn.Linear(D, 2 * C))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, shift = self.ada_lin(cond).view(-1, 1, 2, self.C).unbind(2)
        return ada_norm(x, scale, shift, self.rms, self.eps)


class SharedAdaLin(nn.Linear):
    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        C = self.weight.shape[0] // 6
        return super().forward(cond).reshape(-1, 1, 6, C)


class BlockChunk(nn.Module):
    """upstream MultipleLayers: only the key layout (``block_chunks.{c}.module.{j}``)."""

    def __init__(self, blocks: Sequence[nn.Module]):
        super().__init__()
        self.module = nn.ModuleList(blocks)

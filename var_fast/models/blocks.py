"""Transformer blocks of VAR: AdaLN self-attention blocks and the AdaLN head norm.

Names and shapes follow FoundationVision/VAR ``models/basic_var.py``; the forward passes here are
the *reference* arithmetic (same ops, same order) used by ``backend="reference"``. The fast backend
reuses the parameters and runs its own fused path (``var_fast/fast_sampler.py``).
"""
from __future__ import annotations

import math
from typing import List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

# The reference computes this bound in float32 through torch; keep the identical Python float.
MAX_SCALE_MUL = torch.log(torch.tensor(100)).item()


class KVCache:
    """Growing per-block key/value cache of the reference path (concatenation, as upstream)."""

    def __init__(self):
        self.k: Optional[torch.Tensor] = None
        self.v: Optional[torch.Tensor] = None

    def append(self, k: torch.Tensor, v: torch.Tensor):
        if self.k is None:
            self.k, self.v = k, v
        else:
            self.k = torch.cat((self.k, k), dim=2)
            self.v = torch.cat((self.v, v), dim=2)
        return self.k, self.v


class SelfAttention(nn.Module):
    def __init__(self, embed_dim: int, num_heads: int, attn_l2_norm: bool):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim = num_heads, embed_dim // num_heads
        self.attn_l2_norm = attn_l2_norm
        if attn_l2_norm:
            self.scale = 1.0
            self.scale_mul_1H11 = nn.Parameter(torch.full((1, num_heads, 1, 1), 4.0).log())
        else:
            self.scale = 0.25 / math.sqrt(self.head_dim)
        self.mat_qkv = nn.Linear(embed_dim, 3 * embed_dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(embed_dim))
        self.v_bias = nn.Parameter(torch.zeros(embed_dim))
        self.register_buffer("zero_k_bias", torch.zeros(embed_dim))
        self.proj = nn.Linear(embed_dim, embed_dim)

    def qkv_bias(self) -> torch.Tensor:
        return torch.cat((self.q_bias, self.zero_k_bias, self.v_bias))

    def head_scale(self) -> torch.Tensor:
        """Per-head multiplier of the L2-normalised queries, (1, H, 1, 1)."""
        return self.scale_mul_1H11.clamp_max(MAX_SCALE_MUL).exp()

    def forward(self, x: torch.Tensor, cache: Optional[KVCache] = None,
                attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        B, L, C = x.shape
        qkv = F.linear(x, self.mat_qkv.weight, self.qkv_bias()).view(B, L, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each B, H, L, c
        if self.attn_l2_norm:
            q = F.normalize(q, dim=-1).mul(self.head_scale())
            k = F.normalize(k, dim=-1)
        if cache is not None:
            k, v = cache.append(k, v)
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale, attn_mask=attn_mask)
        return self.proj(out.transpose(1, 2).reshape(B, L, C))


class FFN(nn.Module):
    def __init__(self, embed_dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(embed_dim, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SharedAdaLin(nn.Linear):
    """One AdaLN projection shared by every block (var_d36): (B, D) -> (B, 1, 6, C)."""

    def forward(self, cond_BD: torch.Tensor) -> torch.Tensor:
        C = self.weight.shape[0] // 6
        return super().forward(cond_BD).view(-1, 1, 6, C)


class AdaLNSelfAttn(nn.Module):
    def __init__(self, embed_dim: int, cond_dim: int, num_heads: int, mlp_hidden: int, shared_aln: bool,
                 attn_l2_norm: bool, norm_eps: float = 1e-6):
        super().__init__()
        self.C = embed_dim
        self.shared_aln = shared_aln
        self.attn = SelfAttention(embed_dim, num_heads, attn_l2_norm)
        self.ffn = FFN(embed_dim, mlp_hidden)
        self.ln_wo_grad = nn.LayerNorm(embed_dim, eps=norm_eps, elementwise_affine=False)
        if shared_aln:
            self.ada_gss = nn.Parameter(torch.zeros(1, 1, 6, embed_dim))
        else:
            self.ada_lin = nn.Sequential(nn.SiLU(inplace=False), nn.Linear(cond_dim, 6 * embed_dim))

    def modulation(self, cond: torch.Tensor) -> List[torch.Tensor]:
        """gamma1, gamma2, scale1, scale2, shift1, shift2, each (B, 1, C).

        ``cond`` is the class embedding (B, D), or with shared AdaLN the shared projection (B, 1, 6, C).
        """
        if self.shared_aln:
            return list((self.ada_gss + cond).unbind(2))
        return list(self.ada_lin(cond).view(-1, 1, 6, self.C).unbind(2))

    def forward(self, x: torch.Tensor, cond: torch.Tensor, cache: Optional[KVCache] = None,
                attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        gamma1, gamma2, scale1, scale2, shift1, shift2 = self.modulation(cond)
        x = x + self.attn(self.ln_wo_grad(x).mul(scale1.add(1)).add_(shift1), cache, attn_mask).mul_(gamma1)
        x = x + self.ffn(self.ln_wo_grad(x).mul(scale2.add(1)).add_(shift2)).mul(gamma2)
        return x


class AdaLNBeforeHead(nn.Module):
    def __init__(self, embed_dim: int, cond_dim: int, norm_eps: float = 1e-6):
        super().__init__()
        self.C = embed_dim
        self.ln_wo_grad = nn.LayerNorm(embed_dim, eps=norm_eps, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(inplace=False), nn.Linear(cond_dim, 2 * embed_dim))

    def modulation(self, cond_BD: torch.Tensor) -> List[torch.Tensor]:
        """scale, shift, each (B, 1, C)."""
        return list(self.ada_lin(cond_BD).view(-1, 1, 2, self.C).unbind(2))

    def forward(self, x: torch.Tensor, cond_BD: torch.Tensor) -> torch.Tensor:
        scale, shift = self.modulation(cond_BD)
        return self.ln_wo_grad(x).mul(scale.add(1)).add_(shift)

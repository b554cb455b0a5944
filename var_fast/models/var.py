"""The VAR transformer (class-conditional next-scale prediction).

Parameter and buffer names/shapes are those of FoundationVision/VAR ``models/var.py`` so the
published ``var_d*.pth`` files load with ``strict=True``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import torch.nn as nn

from .blocks import AdaLNBeforeHead, AdaLNSelfAttn, KVCache, SharedAdaLin

PATCH_NUMS_256 = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
PATCH_NUMS_512 = (1, 2, 3, 4, 6, 9, 13, 18, 24, 32)


@dataclass(frozen=True)
class VARConfig:
    depth: int = 16
    embed_dim: int = 1024
    num_heads: int = 16
    mlp_hidden: int = 4096
    num_classes: int = 1000
    shared_aln: bool = False
    attn_l2_norm: bool = True
    patch_nums: Tuple[int, ...] = PATCH_NUMS_256
    Cvae: int = 32
    vocab_size: int = 4096
    norm_eps: float = 1e-6

    @staticmethod
    def for_depth(depth: int, **overrides) -> "VARConfig":
        """The published layout: width 64*depth, one head per 64 channels, MLP ratio 4."""
        width = 64 * depth
        base = dict(depth=depth, embed_dim=width, num_heads=depth, mlp_hidden=4 * width)
        base.update(overrides)
        return VARConfig(**base)

    @property
    def L(self) -> int:
        return sum(pn * pn for pn in self.patch_nums)


def level_index(patch_nums) -> torch.Tensor:
    """(1, L) scale index of every token."""
    return torch.cat([torch.full((pn * pn,), i) for i, pn in enumerate(patch_nums)]).view(1, -1)


class VAR(nn.Module):
    def __init__(self, config: VARConfig):
        super().__init__()
        self.config = config
        C = self.C = self.D = config.embed_dim
        self.depth, self.num_heads = config.depth, config.num_heads
        self.Cvae, self.V = config.Cvae, config.vocab_size
        self.num_classes = config.num_classes
        self.patch_nums = tuple(config.patch_nums)
        self.L = config.L
        self.first_l = self.patch_nums[0] ** 2

        self.word_embed = nn.Linear(self.Cvae, C)
        self.class_emb = nn.Embedding(self.num_classes + 1, C)  # last row: the unconditional class
        self.pos_start = nn.Parameter(torch.zeros(1, self.first_l, C))
        self.pos_1LC = nn.Parameter(torch.zeros(1, self.L, C))
        self.lvl_embed = nn.Embedding(len(self.patch_nums), C)
        if config.shared_aln:
            self.shared_ada_lin = nn.Sequential(nn.SiLU(inplace=False), SharedAdaLin(C, 6 * C))
        else:
            self.shared_ada_lin = nn.Identity()
        self.blocks = nn.ModuleList([
            AdaLNSelfAttn(C, C, config.num_heads, config.mlp_hidden, config.shared_aln, config.attn_l2_norm,
                          config.norm_eps)
            for _ in range(config.depth)
        ])
        lvl = level_index(self.patch_nums)
        d = lvl.view(1, self.L, 1)
        self.register_buffer("lvl_1L", lvl.contiguous())
        # block-causal mask over scales; only teacher forcing uses it, but checkpoints carry it
        self.register_buffer("attn_bias_for_masking",
                             torch.where(d >= d.transpose(1, 2), 0.0, -torch.inf).reshape(1, 1, self.L, self.L))
        self.head_nm = AdaLNBeforeHead(C, C, config.norm_eps)
        self.head = nn.Linear(C, self.V)

    def begin_ends(self) -> List[Tuple[int, int]]:
        out, cur = [], 0
        for pn in self.patch_nums:
            out.append((cur, cur + pn * pn))
            cur += pn * pn
        return out

    def level_pos(self) -> torch.Tensor:
        """Level plus position embedding of every token, (1, L, C)."""
        return self.lvl_embed(self.lvl_1L) + self.pos_1LC

    def logits(self, h: torch.Tensor, cond_BD: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_nm(h.float(), cond_BD).float()).float()

    def forward_scale(self, x: torch.Tensor, cond_BD: torch.Tensor, caches: Optional[List[KVCache]],
                      attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """All blocks on one scale's tokens with KV caches (reference arithmetic) -> logits. ``attn_mask``:
        several scales in one pass (CoDe's refiner prefill: a slice of ``attn_bias_for_masking``)."""
        cond = self.shared_ada_lin(cond_BD)
        for i, block in enumerate(self.blocks):
            x = block(x, cond, None if caches is None else caches[i], attn_mask)
        return self.logits(x, cond_BD)

    def forward(self, label_B: torch.Tensor, x_BLCv_wo_first_l: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (B, L, V) over all scales (training; no class dropout here)."""
        B = label_B.shape[0]
        cond_BD = self.class_emb(label_B)
        sos = cond_BD.unsqueeze(1).expand(B, self.first_l, -1) + self.pos_start.expand(B, self.first_l, -1)
        x = torch.cat((sos, self.word_embed(x_BLCv_wo_first_l.float())), dim=1)
        x = x + self.lvl_embed(self.lvl_1L.expand(B, -1)) + self.pos_1LC
        mask = self.attn_bias_for_masking.to(x.dtype)
        cond = self.shared_ada_lin(cond_BD)
        for block in self.blocks:
            x = block(x, cond, None, mask)
        return self.logits(x, cond_BD)

"""The Infinity transformer (FoundationVision/Infinity infinity/models/infinity.py at 4c27bbb), text-to-image,
bit labels, with upstream's exact state-dict keys (``block_chunks.{c}.module.{j}.*`` as the published
checkpoints, built with block_chunks=8). The sampling loop lives in reference_sampler.py."""
from __future__ import annotations

from typing import Dict, Iterator, List

import torch
import torch.nn as nn

from .blocks import AdaLNBeforeHead, BlockChunk, CrossAttnBlock, RMSNorm, SharedAdaLin, TextAttentivePool
from .config import NUM_LEVEL_EMBEDDINGS, InfinityConfig


def default_cfg_uncond(text_maxlen: int, text_channels: int) -> torch.Tensor:
    """Upstream's initial cfg_uncond (trunc-normal std 1.2 from a CPU generator seeded 0, / sqrt(Ct5)): the
    rows a checkpoint with a shorter cfg_uncond does not overwrite (Infinity.load_state_dict)."""
    t = torch.empty(text_maxlen, text_channels)
    g = torch.Generator(device="cpu")
    g.manual_seed(0)
    torch.nn.init.trunc_normal_(t, std=1.2, generator=g)
    return t / text_channels ** 0.5


class Infinity(nn.Module):
    def __init__(self, cfg: InfinityConfig):
        super().__init__()
        self.cfg = cfg
        C, D, Ct5 = cfg.embed_dim, cfg.embed_dim, cfg.text_channels
        eps = cfg.norm_eps
        uncond = torch.zeros(cfg.text_maxlen, Ct5)
        if cfg.rand_uncond:
            self.register_buffer("cfg_uncond", uncond)
        else:
            self.cfg_uncond = nn.Parameter(uncond)
        self.text_norm = RMSNorm(Ct5, eps=eps)
        self.text_proj_for_sos = TextAttentivePool(Ct5, D, cfg.pool_heads)
        self.text_proj_for_ca = nn.Sequential(nn.Linear(Ct5, D), nn.GELU(approximate="tanh"), nn.Linear(D, D))
        self.pos_start = nn.Parameter(torch.zeros(1, 1, C))
        self.lvl_embed = nn.Embedding(NUM_LEVEL_EMBEDDINGS, C)
        if cfg.nm0:
            self.norm0_ve = RMSNorm(cfg.d_vae, eps) if cfg.rms_norm else nn.LayerNorm(cfg.d_vae, eps=eps)
        else:
            self.norm0_ve = nn.Identity()
        self.word_embed = nn.Linear(cfg.d_vae, C)
        self.shared_ada_lin = nn.Sequential(nn.SiLU(inplace=False), SharedAdaLin(D, 6 * C)) if cfg.shared_aln else nn.Identity()
        blocks = [CrossAttnBlock(C, cfg.num_heads, cfg.mlp_hidden, shared_aln=cfg.shared_aln, swiglu=cfg.swiglu,
                                 rms_norm=cfg.rms_norm, ca_gamma=cfg.ca_gamma, eps=eps) for _ in range(cfg.depth)]
        if cfg.block_chunks:
            n = cfg.blocks_per_chunk
            self.block_chunks = nn.ModuleList(BlockChunk(blocks[i * n:(i + 1) * n]) for i in range(cfg.block_chunks))
        else:
            self.blocks = nn.ModuleList(blocks)
        V = cfg.bits_out
        if cfg.head_aln:
            self.head_nm = AdaLNBeforeHead(C, D, cfg.rms_norm, eps)
            self.head = nn.Linear(C, V) if cfg.head_depth == 1 else \
                nn.Sequential(nn.Linear(C, C), nn.GELU(approximate="tanh"), nn.Linear(C, V))
        else:
            norm = (lambda: RMSNorm(C, eps)) if cfg.rms_norm else (lambda: nn.LayerNorm(C, eps=eps))
            self.head = nn.Sequential(norm(), nn.Linear(C, V)) if cfg.head_depth == 1 else \
                nn.Sequential(norm(), nn.Linear(C, C), nn.GELU(approximate="tanh"), nn.Linear(C, V))

    # ---- structure ------------------------------------------------------------------------------
    def chunks(self) -> Iterator[List[CrossAttnBlock]]:
        """Blocks grouped as upstream runs them (the level embedding is added per chunk)."""
        if self.cfg.block_chunks:
            for c in self.block_chunks:
                yield list(c.module)
        else:  # flat layout: one chunk
            yield list(self.blocks)

    def all_blocks(self) -> List[CrossAttnBlock]:
        return [b for chunk in self.chunks() for b in chunk]

    def reset_caches(self) -> None:
        for b in self.all_blocks():
            b.sa.reset_cache()

    # ---- pieces of the forward pass ---------------------------------------------------------------
    def condition(self, text: torch.Tensor, lens: List[int]):
        """Normalised text tokens -> (sos / cond_BD (B, D), per-block AdaLN input, cross-attention text (N, D))."""
        text = self.text_norm(text)
        cond_BD = self.text_proj_for_sos(text, lens)
        kv_text = self.text_proj_for_ca(text)
        with torch.autocast(cond_BD.device.type, enabled=False):
            cond_gss = self.shared_ada_lin(cond_BD.float()).float().contiguous()
        return cond_BD, cond_gss, kv_text

    def add_level_embedding(self, x: torch.Tensor, si: int) -> torch.Tensor:
        bs, L, _ = x.shape
        x[:, :L] += self.lvl_embed(si * torch.ones((bs, L), dtype=torch.int).to(x.device))
        return x

    def get_logits(self, h: torch.Tensor, cond_BD: torch.Tensor) -> torch.Tensor:
        with torch.autocast(h.device.type, enabled=False):  # upstream: the head never under autocast
            if self.cfg.head_aln:
                return self.head(self.head_nm(h.float(), cond_BD.float()))
            return self.head(h.float())

    # ---- loading ------------------------------------------------------------------------------------
    def adapt_state_dict(self, sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """What upstream's Infinity.load_state_dict does before loading: cfg_uncond cut or padded to
        text_maxlen rows (padding with upstream's initial values), training-only buffers dropped; the
        derived all-zero ``zero_k_bias`` buffers filled in when a file left them out."""
        sd = dict(sd)
        if "cfg_uncond" in sd:
            old = sd["cfg_uncond"]
            n = self.cfg.text_maxlen
            if old.shape[0] < n:
                init = default_cfg_uncond(n, self.cfg.text_channels)
                sd["cfg_uncond"] = torch.cat((old.to(init.dtype), init[old.shape[0]:]))
            elif old.shape[0] > n:
                sd["cfg_uncond"] = old[:n]
        for name in ("lvl_1L", "attn_bias_for_masking", "Infinity_visible_kvlen", "Infinity_invisible_qlen"):
            sd.pop(name, None)
        for name, buf in self.named_buffers():
            if name.endswith("zero_k_bias") and name not in sd:
                sd[name] = torch.zeros(buf.shape, dtype=buf.dtype)
        return sd

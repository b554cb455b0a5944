"""FoundationVision/VAR's own ``autoregressive_infer_cfg`` on var_fast's random weights, in the same
process, and the check that decides whether its time may be compared at all: greedy (top_k=1)
tokens must equal the reference backend's on the same weights, else no ratio is printed."""
from __future__ import annotations

import contextlib
import importlib
import os
import sys
from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch


@dataclass
class Verdict:
    ok: bool
    reason: str
    differing: int = 0
    total: int = 0


def compare_tokens(reference: Sequence[torch.Tensor], upstream: Sequence[torch.Tensor]) -> Verdict:
    """Whether upstream's per-scale greedy tokens are the reference backend's, and if not, where not."""
    if len(reference) != len(upstream):
        return Verdict(False, f"upstream drew {len(upstream)} scales, the reference backend {len(reference)}")
    total = sum(t.numel() for t in reference)
    if total == 0:
        return Verdict(False, "no tokens to compare")
    differing, first = 0, None
    for si, (a, b) in enumerate(zip(reference, upstream)):
        if a.shape != b.shape:
            return Verdict(False, f"scale {si}: upstream tokens have shape {tuple(b.shape)}, expected {tuple(a.shape)}",
                           total=total)
        n = int((a.cpu() != b.cpu()).sum())
        if n and first is None:
            first = si
        differing += n
    if differing:
        return Verdict(False, f"greedy tokens differ from the reference backend's: {differing} of {total}, "
                              f"first at scale {first}", differing, total)
    return Verdict(True, f"greedy tokens equal on all {total}", 0, total)


def ratio_or_refusal(fast_s: Optional[float], upstream_s: Optional[float], verdict: Optional[Verdict]) -> str:
    """The speed-up column: '3.10x', or why there is none."""
    if verdict is None:
        return "no upstream (--upstream DIR)"
    if not verdict.ok:
        return f"refused: {verdict.reason}"
    if not fast_s or not upstream_s:
        return "not measured"
    return f"{upstream_s / fast_s:.2f}x"


class Upstream:
    """An upstream checkout's VAR/VQVAE classes, imported from ``root`` (its models/ and dist.py)."""

    def __init__(self, root: str):
        root = os.path.abspath(root)
        if not os.path.isfile(os.path.join(root, "models", "var.py")):
            raise FileNotFoundError(f"{root} is not a FoundationVision/VAR checkout (no models/var.py)")
        sys.path.insert(0, root)
        self.var_module = importlib.import_module("models.var")
        self.models = importlib.import_module("models")
        self.root = root

    def build(self, var, vae):
        """Upstream modules on var's device holding exactly var's and vae's weights."""
        cfg, vcfg = var.config, vae.config
        device = next(var.parameters()).device
        with torch.device(device):
            uvae = self.models.VQVAE(vocab_size=vcfg.vocab_size, z_channels=vcfg.z_channels, ch=vcfg.ch,
                                     test_mode=True, share_quant_resi=vcfg.share_quant_resi,
                                     v_patch_nums=tuple(cfg.patch_nums))
            uvar = self.models.VAR(vae_local=uvae, num_classes=cfg.num_classes, depth=cfg.depth,
                                   embed_dim=cfg.embed_dim, num_heads=cfg.num_heads,
                                   mlp_ratio=cfg.mlp_hidden / cfg.embed_dim, norm_eps=cfg.norm_eps,
                                   shared_aln=cfg.shared_aln, attn_l2_norm=cfg.attn_l2_norm,
                                   patch_nums=tuple(cfg.patch_nums))
        uvae.load_state_dict(vae.state_dict(), strict=True)
        uvar.load_state_dict(var.state_dict(), strict=True)
        uvar.rng = torch.Generator(device=device)  # upstream makes its generator on its dist module's device
        return uvar.eval().requires_grad_(False), uvae.eval()

    @contextlib.contextmanager
    def recording_tokens(self, into: List[torch.Tensor]):
        """Record the tokens upstream draws at every scale (its module-level sampler, wrapped)."""
        original = self.var_module.sample_with_top_k_top_p_

        def wrapped(*args, **kwargs):
            idx = original(*args, **kwargs)
            into.append(idx[:, :, 0].clone())
            return idx

        self.var_module.sample_with_top_k_top_p_ = wrapped
        try:
            yield into
        finally:
            self.var_module.sample_with_top_k_top_p_ = original

    @torch.no_grad()
    def greedy_check(self, uvar, reference_sampler, labels: torch.Tensor, cfg: float = 1.5) -> Verdict:
        """float32, top_k=1: upstream's tokens against var_fast's reference backend on the same weights."""
        _, ref_tokens = reference_sampler.sample(labels, cfg=cfg, top_k=1, seed=0, return_tokens=True)
        tokens: List[torch.Tensor] = []
        with self.recording_tokens(tokens):
            uvar.autoregressive_infer_cfg(labels.shape[0], labels, g_seed=0, cfg=cfg, top_k=1, top_p=0.0)
        return compare_tokens(ref_tokens, tokens)

    @staticmethod
    def sample(uvar, labels: torch.Tensor, dtype: torch.dtype, **kwargs) -> torch.Tensor:
        """Upstream's whole sampler (decoding included) as its demo runs it, autocast to ``dtype``."""
        device_type = labels.device.type
        with torch.inference_mode(), torch.autocast(device_type, dtype=dtype, enabled=dtype != torch.float32):
            return uvar.autoregressive_infer_cfg(labels.shape[0], labels, g_seed=0, **kwargs)

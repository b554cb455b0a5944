"""CoDe's own code (czg1225/CoDe ``models/var.py``: ``autoregressive_infer_cfg_draft`` then
``autoregressive_infer_cfg_refine``) on var_fast's random-weight pair, in the same process, for
``make gpu-check ARGS="--code DIR"``. Its time is compared only after its greedy tokens equal var_fast's
reference backend's on the same pair (``Verdict``, as for upstream VAR)."""
from __future__ import annotations

import contextlib
import importlib
import io
import os
import sys
from typing import List

import torch

from .upstream import Verdict, compare_tokens

# top-level names of a CoDe checkout that a FoundationVision/VAR checkout (--upstream) also uses
_SHARED_NAMES = ("models", "dist", "utils")


@contextlib.contextmanager
def _own_modules():
    """Import CoDe's packages without taking or leaving upstream VAR's same-named ones in sys.modules."""
    clash = lambda name: name.split(".")[0] in _SHARED_NAMES  # noqa: E731
    saved = {k: v for k, v in sys.modules.items() if clash(k)}
    for k in saved:
        del sys.modules[k]
    try:
        yield
    finally:
        for k in [k for k in sys.modules if clash(k)]:
            del sys.modules[k]
        sys.modules.update(saved)


class CoDeUpstream:
    """A CoDe checkout's VAR/VQVAE classes (its models/ and dist.py; ``huggingface_hub`` installed)."""

    def __init__(self, root: str):
        root = os.path.abspath(root)
        if not os.path.isfile(os.path.join(root, "models", "var.py")):
            raise FileNotFoundError(f"{root} is not a czg1225/CoDe checkout (no models/var.py)")
        sys.path.insert(0, root)
        try:
            with _own_modules(), contextlib.redirect_stdout(io.StringIO()):
                self.var_module = importlib.import_module("models.var")
                self.vqvae_module = importlib.import_module("models.vqvae")
        finally:
            sys.path.remove(root)
        if not hasattr(self.var_module.VAR, "autoregressive_infer_cfg_draft"):
            raise ImportError(f"{root}/models/var.py has no autoregressive_infer_cfg_draft: not CoDe's code")

    def _build_one(self, var, vae, uvae=None):
        cfg, vcfg = var.config, vae.config
        device = next(var.parameters()).device
        with torch.device(device), contextlib.redirect_stdout(io.StringIO()):
            if uvae is None:
                uvae = self.vqvae_module.VQVAE(vocab_size=vcfg.vocab_size, z_channels=vcfg.z_channels, ch=vcfg.ch,
                                               test_mode=True, share_quant_resi=vcfg.share_quant_resi,
                                               v_patch_nums=tuple(cfg.patch_nums))
                uvae.load_state_dict(vae.state_dict(), strict=True)
            uvar = self.var_module.VAR(vae_local=uvae, num_classes=cfg.num_classes, depth=cfg.depth,
                                       embed_dim=cfg.embed_dim, num_heads=cfg.num_heads,
                                       mlp_ratio=cfg.mlp_hidden / cfg.embed_dim, norm_eps=cfg.norm_eps,
                                       shared_aln=cfg.shared_aln, attn_l2_norm=cfg.attn_l2_norm,
                                       patch_nums=tuple(cfg.patch_nums), flash_if_available=False,
                                       fused_if_available=False)
        uvar.load_state_dict(var.state_dict(), strict=True)
        uvar.rng = torch.Generator(device=device)
        return uvar.eval().requires_grad_(False), uvae.eval()

    def build(self, drafter, refiner, vae):
        """CoDe's (drafter, refiner) holding exactly these weights, sharing one VQVAE as CoDe's builder does."""
        udrafter, uvae = self._build_one(drafter, vae)
        urefiner, _ = self._build_one(refiner, vae, uvae)
        return udrafter, urefiner

    def _sample(self, udrafter, urefiner, labels, draft_steps: int, **kw):
        """Draft then refine; CoDe's code takes top-k and temperature as one value per scale."""
        B = labels.shape[0]
        S = len(udrafter.patch_nums)
        top_k = kw.pop("top_k")
        temp = kw.pop("temperature", 1.0)
        top_ks = list(top_k) if isinstance(top_k, (list, tuple)) else [top_k] * S
        temps = list(temp) if isinstance(temp, (list, tuple)) else [temp] * S
        f_hat, hub = udrafter.autoregressive_infer_cfg_draft(B=B, label_B=labels, top_k=top_ks, g_seed=0,
                                                            more_smooth=False, exit_num=draft_steps, temp=temps, **kw)
        return urefiner.autoregressive_infer_cfg_refine(B=B, label_B=labels, top_k=top_ks, g_seed=0,
                                                       more_smooth=False, draft=hub, f_hat=f_hat,
                                                       entry_num=draft_steps, temp=temps, **kw)

    @torch.no_grad()
    def greedy_check(self, udrafter, urefiner, reference_pair, labels: torch.Tensor, draft_steps: int,
                     cfg: float = 1.5) -> Verdict:
        """float32, top_k=1: CoDe's tokens (the drafter's first N scales, the refiner's after) against
        var_fast's reference backend with the same pair."""
        _, ref_tokens = reference_pair.sample(labels, cfg=cfg, top_k=1, seed=0, draft_steps=draft_steps,
                                              return_tokens=True)
        drawn: List[torch.Tensor] = []
        original = self.var_module.sample_with_top_k_top_p_

        def recording(*args, **kwargs):
            idx = original(*args, **kwargs)
            drawn.append(idx[:, :, 0].clone())
            return idx

        S = len(udrafter.patch_nums)
        greedy = dict(B=labels.shape[0], label_B=labels, cfg=cfg, top_k=[1] * S, top_p=0.0, g_seed=0,
                      more_smooth=False, temp=[1.0] * S)
        self.var_module.sample_with_top_k_top_p_ = recording
        try:
            f_hat, hub = udrafter.autoregressive_infer_cfg_draft(exit_num=draft_steps, **greedy)
            drafted = list(drawn)
            drawn.clear()
            urefiner.autoregressive_infer_cfg_refine(draft=hub, f_hat=f_hat, entry_num=draft_steps, **greedy)
        finally:
            self.var_module.sample_with_top_k_top_p_ = original
        return compare_tokens(ref_tokens, drafted[:draft_steps] + drawn[draft_steps:])

    def sample(self, udrafter, urefiner, labels: torch.Tensor, dtype: torch.dtype, draft_steps: int, **kw):
        """CoDe's whole pair sampler (VQVAE decode included, as its refine returns images), autocast to ``dtype``."""
        with torch.inference_mode(), torch.autocast(labels.device.type, dtype=dtype, enabled=dtype != torch.float32):
            return self._sample(udrafter, urefiner, labels, draft_steps, **kw)

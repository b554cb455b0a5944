"""Drop-in replacement of upstream ``VAR.autoregressive_infer_cfg`` on a reference-code VAR instance.

``patch(var_module)`` needs nothing from the reference code itself: it reads the module's weights
(``state_dict()``, shared, not copied) and its VQVAE from ``var_module.vae_proxy[0]``, and keeps
the upstream signature and random stream (``var_module.rng``).
"""
from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn as nn

from .api import build_models
from .labels import check_sampling_args
from .reference.autoregressive import autoregressive_infer_cfg as _reference_loop
from .reference.autoregressive import random_labels

_ORIGINAL = "_var_fast_unpatched"


def _adopt(var_module: nn.Module):
    """var_fast models viewing the same tensors as the reference module and its VQVAE."""
    try:
        vae_module = var_module.vae_proxy[0]
    except (AttributeError, IndexError, TypeError) as err:
        raise TypeError("patch() expects a VAR built by the reference code (with a vae_proxy tuple holding its "
                        f"VQVAE), got {type(var_module).__name__}") from err
    var, vae = build_models(var_module.state_dict(), vae_module.state_dict(), "<patched VAR>", "<patched VQVAE>",
                            patch_nums=tuple(var_module.patch_nums),
                            num_heads=getattr(var_module, "num_heads", None))
    device = var_module.class_emb.weight.device
    return var.to(device), vae.to(device)


def _fast_sampler(var_module: nn.Module, dtype: torch.dtype):
    """The module's FastSampler, built once per device and dtype (CUDA graphs survive across calls)."""
    from .fast_sampler import FastSampler
    device = var_module.class_emb.weight.device
    cached = var_module.__dict__.get("_var_fast_fast")
    if cached is None or cached[0] != (device, dtype):
        var, vae = _adopt(var_module)
        cached = ((device, dtype), FastSampler(var, vae, dtype=dtype), vae)
        var_module.__dict__["_var_fast_fast"] = cached
    return cached[1], cached[2]


def _infer(var_module: nn.Module, B: int, label_B: Optional[Union[int, torch.Tensor]], g_seed: Optional[int] = None,
           cfg=1.5, top_k=0, top_p=0.0, more_smooth=False, backend: str = "reference",
           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    check_sampling_args(cfg, top_k, top_p)
    if backend == "fast":
        fast, vae = _fast_sampler(var_module, dtype)
        device = vae.quantize.embedding.weight.device
        seed = int(torch.randint(0, 2**62, (1,)).item()) if g_seed is None else int(g_seed)
        if label_B is None:
            g = torch.Generator(device=device)
            g.manual_seed(seed)
            label_B = random_labels(fast.var.num_classes, B, device, g)
        elif isinstance(label_B, int):
            label_B = torch.full((B,), fill_value=fast.var.num_classes if label_B < 0 else label_B, device=device)
        f_hat, _ = fast.sample(label_B.to(device), seed=seed, cfg=cfg, top_k=top_k, top_p=top_p,
                               more_smooth=more_smooth)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            return vae.fhat_to_img(f_hat).add_(1).mul_(0.5).float()
    var, vae = _adopt(var_module)
    device = var.class_emb.weight.device
    if g_seed is None:
        rng = None
    else:
        rng = var_module.rng
        rng.manual_seed(g_seed)
    if label_B is None:
        label_B = random_labels(var.num_classes, B, device, rng)
    elif isinstance(label_B, int):
        label_B = torch.full((B,), fill_value=var.num_classes if label_B < 0 else label_B, device=device)
    f_hat, _ = _reference_loop(var, vae, label_B, rng, cfg=cfg, top_k=top_k, top_p=top_p, more_smooth=more_smooth)
    return vae.fhat_to_img(f_hat).add_(1).mul_(0.5)


def patch(var_module: nn.Module, backend: str = "reference", dtype: torch.dtype = torch.float32) -> nn.Module:
    """Replace ``var_module.autoregressive_infer_cfg`` with var_fast's, keeping the upstream signature.

    backend="reference": the same result as upstream, seed for seed (plain PyTorch).
    backend="fast": var_fast's native kernels (and CUDA graphs on a GPU) in ``dtype``; the same
    distribution, drawn from var_fast's counter-based generator keyed by g_seed (so not the
    upstream random stream).
    """
    if backend not in ("reference", "fast"):
        raise ValueError(f"backend must be 'reference' or 'fast', got {backend!r}")
    if backend == "fast":
        from .native import extension as _ext
        _ext.require()
    if getattr(var_module, _ORIGINAL, False):
        unpatch(var_module)

    @torch.no_grad()
    def autoregressive_infer_cfg(B: int, label_B=None, g_seed=None, cfg=1.5, top_k=0, top_p=0.0, more_smooth=False):
        return _infer(var_module, B, label_B, g_seed=g_seed, cfg=cfg, top_k=top_k, top_p=top_p,
                      more_smooth=more_smooth, backend=backend, dtype=dtype)

    _adopt(var_module)  # fail now, not at the first call, if the module is not a reference VAR
    var_module.autoregressive_infer_cfg = autoregressive_infer_cfg  # instance attribute shadows the method
    setattr(var_module, _ORIGINAL, True)
    return var_module


def unpatch(var_module: nn.Module) -> nn.Module:
    """Restore the module's own ``autoregressive_infer_cfg``."""
    if getattr(var_module, _ORIGINAL, False):
        del var_module.autoregressive_infer_cfg
        delattr(var_module, _ORIGINAL)
        var_module.__dict__.pop("_var_fast_fast", None)
    return var_module

"""``var_fast.load``: build a Sampler from reference-format checkpoint files."""
from __future__ import annotations

import os
from typing import Optional, Sequence

import torch

from .checkpoint import (CheckpointError, check_files_exist, check_pair, load_strict, read_state_dict,
                         vae_config_from_state_dict, var_config_from_state_dict)
from .models import VAR, VQVAE
from .precision import DTYPES, resolve_dtype  # noqa: F401  (DTYPES: the names load() accepts)
from .sampler import Sampler



def resolve_device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {str(device)!r} was asked for, but no CUDA GPU is available "
                           f"(torch {torch.__version__}, CUDA build: {torch.version.cuda is not None}); use device='cpu'")
    return device


def build_models(var_sd, vae_sd, var_path: str = "<var>", vae_path: str = "<vae>",
                 patch_nums: Optional[Sequence[int]] = None, num_heads: Optional[int] = None):
    """(VAR, VQVAE) on the CPU holding the given state dicts, configuration read off the weights."""
    var_cfg = var_config_from_state_dict(var_sd, var_path, patch_nums=patch_nums, num_heads=num_heads)
    vae_cfg = vae_config_from_state_dict(vae_sd, vae_path, patch_nums=var_cfg.patch_nums)
    check_pair(var_cfg, vae_cfg, var_path, vae_path)
    with torch.device("meta"):  # no allocation: the checkpoint's tensors are assigned below
        var, vae = VAR(var_cfg), VQVAE(vae_cfg)
    load_strict(var, var_sd, var_path, "VAR", assign=True)
    load_strict(vae, vae_sd, vae_path, "VQVAE", assign=True)
    for module in (var, vae):
        for p in module.parameters():
            p.requires_grad_(False)
    return var.float().eval(), vae.float().eval()


def load(var_ckpt: str | os.PathLike | None = None, vae_ckpt: str | os.PathLike | None = None, *, device=None,
         dtype=None, backend: str = "auto", patch_nums: Optional[Sequence[int]] = None,
         num_heads: Optional[int] = None, channels_last: bool = False) -> Sampler:
    """Load a VAR checkpoint and its VQVAE (``.pth`` read with weights_only=True, or ``.safetensors``).

    ``var_fast.load("d16")`` (d16, d20, d24, d30, d36) loads a published model from
    huggingface.co/FoundationVision/var through huggingface_hub's cache (downloaded once; see
    ``var_fast.hub``); with neither file given, the bundled default model is used. The configuration
    (depth, width, heads, classes, shared AdaLN, attn_l2_norm, patch layout, VQVAE vocabulary, Cvae and
    channel width) is read off the weights; ``patch_nums`` overrides the patch layout when the numbers
    do not determine it. ``dtype`` is the compute precision of the transformer and the VQVAE decoder:
    None or "auto" (default) is bfloat16 on CUDA and float32 on the CPU; float32, bfloat16 or float16
    choose (logits, sampling and the quantizer are float32 whatever it is). ``backend`` is "reference"
    (plain PyTorch, the upstream algorithm), "fast" (native kernels) or "auto". ``channels_last`` runs
    the VQVAE decoder in channels-last memory format (off by default: not yet measured faster).
    """
    from .hub import MODEL_NAMES, is_model_name, published_checkpoints
    if vae_ckpt is None and is_model_name(var_ckpt):
        var_ckpt, vae_ckpt = published_checkpoints(var_ckpt)
    elif (var_ckpt is None) != (vae_ckpt is None):
        raise ValueError(f"pass both var_ckpt and vae_ckpt, a published model name ({', '.join(MODEL_NAMES)}), "
                         f"or neither for the bundled default model; got var_ckpt={var_ckpt!r}, vae_ckpt={vae_ckpt!r}")
    if var_ckpt is None:
        from .default_model import default_checkpoints
        var_ckpt, vae_ckpt = default_checkpoints()
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    var_path, vae_path = os.fspath(var_ckpt), os.fspath(vae_ckpt)
    check_files_exist([(var_path, "VAR checkpoint"), (vae_path, "VQVAE checkpoint")])
    var_sd = read_state_dict(var_path, "VAR checkpoint")
    vae_sd = read_state_dict(vae_path, "VQVAE checkpoint")
    var, vae = build_models(var_sd, vae_sd, var_path, vae_path, patch_nums=patch_nums, num_heads=num_heads)
    return Sampler(var.to(device), vae.to(device), device=device, dtype=dtype, backend=backend,
                   source=(var_path, vae_path), channels_last=channels_last)


__all__ = ["load", "CheckpointError", "build_models"]

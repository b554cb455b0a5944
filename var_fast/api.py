"""``var_fast.load``: build a Sampler from reference-format checkpoint files."""
from __future__ import annotations

import os
from typing import Optional, Sequence

import torch

from .checkpoint import (CheckpointError, check_files_exist, check_pair, load_strict, read_state_dict,
                         vae_config_from_state_dict, var_config_from_state_dict)
from .models import VAR, VQVAE
from .sampler import Sampler

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def resolve_device(device, cpu_fix: str = "device='cpu'") -> torch.device:
    """``device`` (None: cuda when available, else cpu) as a torch.device; a CUDA device without a GPU is a
    RuntimeError whose fix is ``cpu_fix`` (the command line passes "--device cpu")."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device {device!r} is not a device: use cpu, cuda or cuda:<index> ({err})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {str(device)!r} was asked for, but no CUDA GPU is available "
                           f"(torch {torch.__version__}, CUDA build: {torch.version.cuda is not None}); use {cpu_fix}")
    return device


def resolve_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        return DTYPES[dtype]
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype must be torch.float32, torch.bfloat16 or torch.float16, got {dtype!r}")
    return dtype


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
         dtype=torch.float32, backend: str = "auto", patch_nums: Optional[Sequence[int]] = None,
         num_heads: Optional[int] = None) -> Sampler:
    """Load a VAR checkpoint and its VQVAE (``.pth`` read with weights_only=True, or ``.safetensors``).

    ``var_fast.load("d16")`` (d16, d20, d24, d30, d36) loads a published model from
    huggingface.co/FoundationVision/var through huggingface_hub's cache (downloaded once; see
    ``var_fast.hub``); with neither file given, the bundled default model is used. The configuration
    (depth, width, heads, classes, shared AdaLN, attn_l2_norm, patch layout, VQVAE vocabulary, Cvae and
    channel width) is read off the weights; ``patch_nums`` overrides the patch layout when the numbers
    do not determine it. ``dtype`` is the compute precision (float32, bfloat16 or float16); ``backend``
    is "reference" (plain PyTorch, the upstream algorithm), "fast" (native kernels) or "auto".
    """
    from .hub import MODEL_NAMES, is_model_name, looks_like_model_name, published_checkpoints
    if vae_ckpt is None and is_model_name(var_ckpt):
        var_ckpt, vae_ckpt = published_checkpoints(var_ckpt)
    elif vae_ckpt is None and looks_like_model_name(var_ckpt):
        raise ValueError(f"unknown model {var_ckpt}; known: {', '.join(MODEL_NAMES)} (or pass both checkpoint files, "
                         f"var_fast.load(var_ckpt, vae_ckpt), or neither for the bundled default model)")
    elif (var_ckpt is None) != (vae_ckpt is None):
        raise ValueError(f"pass both var_ckpt and vae_ckpt, a published model name ({', '.join(MODEL_NAMES)}), "
                         f"or neither for the bundled default model; got var_ckpt={var_ckpt!r}, vae_ckpt={vae_ckpt!r}")
    if var_ckpt is None:
        from .default_model import default_checkpoints
        var_ckpt, vae_ckpt = default_checkpoints()
    device, dtype = resolve_device(device), resolve_dtype(dtype)
    var_path, vae_path = os.fspath(var_ckpt), os.fspath(vae_ckpt)
    check_files_exist([(var_path, "VAR checkpoint"), (vae_path, "VQVAE checkpoint")])
    var_sd = read_state_dict(var_path, "VAR checkpoint")
    vae_sd = read_state_dict(vae_path, "VQVAE checkpoint")
    var, vae = build_models(var_sd, vae_sd, var_path, vae_path, patch_nums=patch_nums, num_heads=num_heads)
    return Sampler(var.to(device), vae.to(device), device=device, dtype=dtype, backend=backend,
                   source=(var_path, vae_path))


__all__ = ["load", "CheckpointError", "build_models"]

"""``var_fast.load``: build a Sampler from reference-format checkpoint files."""
from __future__ import annotations

import os
from typing import Optional, Sequence

import torch

from .checkpoint import (CheckpointError, check_files_exist, check_pair, load_strict, read_state_dict,
                         vae_config_from_state_dict, var_config_from_state_dict)
from .models import VAR, VQVAE
from .precision import DTYPES, resolve_dtype  # noqa: F401  (DTYPES: the names load() accepts)
from .devices import resolve_device  # noqa: F401  (var_fast.api.resolve_device, as before)
from .sampler import Sampler



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


def _refiner_config(refiner_sd, refiner_path: str, drafter_cfg, drafter_path: str):
    """The refiner's configuration; its patch layout read off its weights, else the drafter's if that fits."""
    try:
        return var_config_from_state_dict(refiner_sd, refiner_path)
    except CheckpointError:
        try:
            return var_config_from_state_dict(refiner_sd, refiner_path, patch_nums=drafter_cfg.patch_nums)
        except CheckpointError as err:
            raise CheckpointError(f"refiner {refiner_path!r} cannot work with drafter {drafter_path!r}: patch layout "
                                  f"(and so image size) differs: {err}") from err


def build_var(var_sd, var_cfg, var_path: str = "<var>") -> VAR:
    """A VAR on the CPU holding ``var_sd`` (a CoDe refiner: the VQVAE is the drafter's)."""
    with torch.device("meta"):
        var = VAR(var_cfg)
    load_strict(var, var_sd, var_path, "VAR", assign=True)
    for p in var.parameters():
        p.requires_grad_(False)
    return var.float().eval()


def load(var_ckpt: str | os.PathLike | None = None, vae_ckpt: str | os.PathLike | None = None, *, device=None,
         dtype=None, backend: str = "auto", patch_nums: Optional[Sequence[int]] = None,
         num_heads: Optional[int] = None, channels_last: bool = False, refiner: str | os.PathLike | None = None,
         draft_steps: Optional[int] = None, transformer: str | os.PathLike | None = None,
         vae: str | os.PathLike | None = None, text_encoder: str | os.PathLike | None = None,
         text_encoder_offload: str = "none", text_encoder_dtype=None, pixels: Optional[str] = None):
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

    Collaborative decoding (CoDe): ``refiner`` (a published name such as "d16" or a VAR checkpoint
    path) makes the loaded model the drafter of the first ``draft_steps`` scales and the refiner
    sample the rest, sharing the VQVAE: ``load("d30", refiner="d16")``, ``load(var, vae, refiner=path)``.
    ``load("code-8")`` (code-6 .. code-9) loads CoDe's fine-tuned pair drafter_8.pth + refiner_8.pth
    from huggingface.co/Zigeng/VAR_CoDe with draft_steps 8 by default. A refiner whose vocabulary,
    Cvae, class count or patch layout differs from the drafter's is refused before any work.

    Infinity (text to image): ``load("infinity-2b")`` ("infinity-8b", "infinity-8b-512") fetches the
    transformer, its BSQ VAE and google/flan-t5-xl into the Hugging Face cache; ``load(transformer=...,
    vae=..., text_encoder=...)`` takes paths (the T5 as a Hugging Face folder). Both return an
    ``InfinitySampler`` (var_fast.infinity.sampler); ``text_encoder_offload`` ("none", "cpu", "free"),
    ``text_encoder_dtype`` and ``pixels`` (the default budget) apply to them only. Needs ``transformers``
    (pip install var_fast[infinity]). ``backend``: "auto"/"reference" (plain PyTorch, upstream's random
    stream) or "fast" (var_fast.infinity.fast_sampler: native ops, var_fast's own per-image stream).
    """
    from .hub import (CODE_PAIR_NAMES, MODEL_NAMES, is_code_pair_name, is_infinity_name, is_model_name, known_names,
                      looks_like_model_name, published_checkpoints)
    if is_infinity_name(var_ckpt) or transformer is not None or text_encoder is not None:
        if vae_ckpt is not None or refiner is not None or draft_steps is not None or patch_nums is not None:
            raise ValueError("an Infinity model takes transformer=, vae=, text_encoder= (or its name); vae_ckpt, "
                             "refiner, draft_steps and patch_nums are VAR's")
        from .infinity.api import load_infinity
        name = var_ckpt if is_infinity_name(var_ckpt) else None
        if name is None and var_ckpt is not None:
            raise ValueError(f"pass an Infinity model's files as transformer=/vae=/text_encoder=, not {var_ckpt!r}")
        return load_infinity(name, transformer=transformer, vae=vae, text_encoder=text_encoder, device=device,
                             dtype=dtype, text_encoder_offload=text_encoder_offload,
                             text_encoder_dtype=text_encoder_dtype, pixels=pixels, backend=backend)
    if vae is not None:
        raise ValueError("vae= goes with transformer= and text_encoder= (Infinity); a VAR's VQVAE is the second "
                         "argument, var_fast.load(var_ckpt, vae_ckpt)")
    if vae_ckpt is None and is_code_pair_name(var_ckpt):
        if refiner is not None:
            raise ValueError(f"{var_ckpt!r} is a drafter/refiner pair already; do not pass refiner=")
        from .hub import code_pair_checkpoints
        var_ckpt, refiner, vae_ckpt, own_steps = code_pair_checkpoints(var_ckpt)
        draft_steps = own_steps if draft_steps is None else draft_steps
    elif vae_ckpt is None and is_model_name(var_ckpt):
        var_ckpt, vae_ckpt = published_checkpoints(var_ckpt)
    elif vae_ckpt is None and looks_like_model_name(var_ckpt):
        raise ValueError(f"unknown model {var_ckpt}; known: {known_names()} (or pass both checkpoint files, "
                         f"var_fast.load(var_ckpt, vae_ckpt), or neither for the bundled default model)")
    elif (var_ckpt is None) != (vae_ckpt is None):
        raise ValueError(f"pass both var_ckpt and vae_ckpt, a published model name ({', '.join(MODEL_NAMES)}), "
                         f"a CoDe pair ({', '.join(CODE_PAIR_NAMES)}), or neither for the bundled default model; "
                         f"got var_ckpt={var_ckpt!r}, vae_ckpt={vae_ckpt!r}")
    if var_ckpt is None:
        from .default_model import default_checkpoints
        var_ckpt, vae_ckpt = default_checkpoints()
    if is_model_name(refiner):
        refiner = published_checkpoints(refiner)[0]
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    var_path, vae_path = os.fspath(var_ckpt), os.fspath(vae_ckpt)
    refiner_path = None if refiner is None else os.fspath(refiner)
    check_files_exist([(var_path, "VAR checkpoint"), (vae_path, "VQVAE checkpoint")]
                      + ([] if refiner_path is None else [(refiner_path, "refiner checkpoint")]))
    var_sd = read_state_dict(var_path, "VAR checkpoint")
    vae_sd = read_state_dict(vae_path, "VQVAE checkpoint")
    refiner_var = None
    if refiner_path is not None:  # checked against the drafter before anything is built
        from .collaborative import check_draft_steps, check_refiner
        refiner_sd = read_state_dict(refiner_path, "refiner checkpoint")
        drafter_cfg = var_config_from_state_dict(var_sd, var_path, patch_nums=patch_nums, num_heads=num_heads)
        refiner_cfg = _refiner_config(refiner_sd, refiner_path, drafter_cfg, var_path)
        check_refiner(drafter_cfg, refiner_cfg, var_path, refiner_path)
        if draft_steps is not None:
            check_draft_steps(draft_steps, len(drafter_cfg.patch_nums))
        refiner_var = build_var(refiner_sd, refiner_cfg, refiner_path)
    elif draft_steps is not None:
        raise ValueError("draft_steps applies to a drafter/refiner pair: pass refiner= (or a CoDe pair name)")
    var, vae = build_models(var_sd, vae_sd, var_path, vae_path, patch_nums=patch_nums, num_heads=num_heads)
    source = (var_path, vae_path) if refiner_path is None else (var_path, vae_path, refiner_path)
    return Sampler(var.to(device), vae.to(device), device=device, dtype=dtype, backend=backend, source=source,
                   channels_last=channels_last, refiner=None if refiner_var is None else refiner_var.to(device),
                   draft_steps=draft_steps)


__all__ = ["load", "CheckpointError", "build_models"]

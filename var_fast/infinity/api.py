"""``load_infinity``: an ``InfinitySampler`` from a published name or from files (what ``var_fast.load``
calls for Infinity)."""
from __future__ import annotations

import json
import os
import sys
from typing import Optional, Union

import torch

PathLike = Union[str, os.PathLike]


def _check_inputs(transformer, vae, text_encoder) -> None:
    """All three given, each where it should be, before anything is read."""
    missing = [n for n, v in (("transformer", transformer), ("vae", vae), ("text_encoder", text_encoder)) if v is None]
    if missing:
        raise ValueError(f"an Infinity model needs transformer=, vae= and text_encoder= (or a published name such "
                         f"as 'infinity-2b'); missing: {', '.join(missing)}")
    for what, path in (("transformer", transformer), ("VAE", vae)):
        if not os.path.exists(os.fspath(path)):
            raise FileNotFoundError(f"Infinity {what} {os.fspath(path)!r} does not exist")
    from .text_encoder import check_encoder_dir
    check_encoder_dir(text_encoder)


def text_encoder_width(folder: str) -> Optional[int]:
    """d_model of a T5 folder's config.json (None when it does not say)."""
    try:
        with open(os.path.join(folder, "config.json")) as f:
            return int(json.load(f)["d_model"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def half_precision_blocks(model, dtype: torch.dtype) -> None:
    """Upstream's bf16=1 (tools/run_infinity.py load_infinity): the transformer blocks' weights in ``dtype``,
    everything else (text projections, head, VAE) in float32, run under autocast. The blocks' norm weights
    are rounded to ``dtype`` but kept as float32 tensors: CUDA autocast runs layer norms in float32 on
    upcast weights, and the CPU's layer norm refuses a float32 input with half weights."""
    for block in model.all_blocks():
        block.to(dtype)
        for module in block.modules():
            if isinstance(module, torch.nn.LayerNorm) or type(module).__name__ == "RMSNorm":
                module.float()


def load_infinity(name: Optional[str] = None, *, transformer: Optional[PathLike] = None, vae: Optional[PathLike] = None,
                  text_encoder: Optional[PathLike] = None, device=None, dtype=None,
                  text_encoder_offload: str = "none", text_encoder_dtype=None, pixels: Optional[str] = None,
                  backend: str = "auto"):
    """A published model by name ("infinity-2b", "infinity-8b", "infinity-8b-512": its files through the
    Hugging Face cache) or the three paths: the transformer (.pth, .safetensors, shards or their folder),
    the BSQ VAE and the T5 encoder's Hugging Face folder. ``dtype``: the transformer's and VAE's compute
    (None: bfloat16 on CUDA, float32 on the CPU); ``text_encoder_dtype`` the T5's (None: float16 on CUDA,
    float32 on the CPU); ``text_encoder_offload``: "none", "cpu" or "free" (var_fast.infinity.text_encoder).
    ``backend``: "reference" (default, also for "auto": seeded images are upstream's run_infinity.py images) or
    "fast" (var_fast/infinity/fast_sampler.py on the native ops; needs the extension)."""
    from ..devices import resolve_device
    from ..precision import resolve_dtype
    from .text_encoder import TextEncoder, check_offload, require_transformers
    check_offload(text_encoder_offload)
    if backend not in ("auto", "reference", "fast"):
        raise ValueError(f"backend must be 'auto', 'reference' or 'fast', got {backend!r}")
    require_transformers()
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    if backend == "fast":
        from ..sampler import resolve_backend
        resolve_backend("fast", device)  # the extension (and its CUDA kernels on CUDA) or a clear error
    else:
        backend = "reference"
    if name is not None:
        from ..hub import INFINITY_MODEL_NAMES, infinity_checkpoints, is_infinity_name
        if not is_infinity_name(name):
            raise ValueError(f"unknown Infinity model {name!r}; known: {', '.join(INFINITY_MODEL_NAMES)}")
        if any(v is not None for v in (transformer, vae, text_encoder)):
            raise ValueError(f"pass either a published name ({name!r}) or transformer=/vae=/text_encoder= paths, not both")
        pixels = pixels or INFINITY_MODEL_NAMES[name][2]
        transformer, vae, text_encoder = infinity_checkpoints(name)
    _check_inputs(transformer, vae, text_encoder)
    from .loading import load_infinity_files
    model, bsq_vae = load_infinity_files(os.fspath(transformer), os.fspath(vae), device=device, dtype=torch.float32)
    if dtype != torch.float32:
        half_precision_blocks(model, dtype)
    width = text_encoder_width(os.fspath(text_encoder))
    if width is not None and width != model.cfg.text_channels:
        from ..checkpoint import CheckpointError
        raise CheckpointError(f"text encoder {os.fspath(text_encoder)!r} gives {width}-channel features but the "
                              f"transformer {os.fspath(transformer)!r} takes {model.cfg.text_channels} "
                              f"(Infinity's published models use google/flan-t5-xl, 2048)")
    encoder = TextEncoder(text_encoder, device=device, dtype=text_encoder_dtype, offload=text_encoder_offload)
    from .sampler import InfinitySampler
    sampler = InfinitySampler(model, bsq_vae, encoder, device=device, dtype=dtype, pixels=pixels or "1M",
                              source=(os.fspath(transformer), os.fspath(vae), os.fspath(text_encoder)),
                              backend=backend)
    if os.environ.get("VAR_FAST_QUIET") != "1":
        print(f"[var_fast] Infinity: {sampler!r}", file=sys.stderr)
    return sampler

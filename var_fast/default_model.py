"""Where the bundled default model lives (trained by scripts/train_default_model.py)."""
from __future__ import annotations

import json
import os
import sys
from typing import Optional, Tuple

ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")
VAR_FILE, VAE_FILE, INFO_FILE = "default_var.pth", "default_vae.pth", "default_model.json"

PUBLISHED = ("The published checkpoints are at https://huggingface.co/FoundationVision/var "
             "(var_d16.pth ... var_d30.pth at 256 px, var_d36.pth at 512 px, and vae_ch160v4096z32.pth); "
             "name one with --model d16 (CLI) or var_fast.load(\"d16\"), downloaded once into the Hugging Face "
             "cache, or pass files with --var CKPT --vae CKPT (CLI) or var_fast.load(var_ckpt, vae_ckpt).")


def default_checkpoints() -> Tuple[str, str]:
    """Paths of the bundled VAR and VQVAE files."""
    var_path, vae_path = os.path.join(ASSETS, VAR_FILE), os.path.join(ASSETS, VAE_FILE)
    if not (os.path.isfile(var_path) and os.path.isfile(vae_path)):
        raise FileNotFoundError(f"the bundled default model is missing from {ASSETS} "
                                f"(expected {VAR_FILE} and {VAE_FILE}). {PUBLISHED}")
    return var_path, vae_path


def default_model_info() -> dict:
    """Class names and recommended sampling settings of the bundled model ({} if absent)."""
    path = os.path.join(ASSETS, INFO_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def check_model_choice(var: Optional[str], vae: Optional[str], model: Optional[str]) -> None:
    """A published model name alone, both paths, or nothing (the bundled model): else a ValueError."""
    if model is not None and (var is not None or vae is not None):
        raise ValueError("pass either --model NAME or --var/--vae paths, not both")
    if (var is None) != (vae is None):
        raise ValueError("pass both --var and --vae, or neither to use the bundled default model.\n" + PUBLISHED)


def chosen_checkpoints(var: Optional[str], vae: Optional[str], model: Optional[str] = None, *,
                       announce: bool = True) -> Tuple[str, str, dict]:
    """The command line's model: (var path, vae path, info). A published model name: its files from the
    Hugging Face cache (downloaded once) and no info; both paths: them and no info; nothing: the
    bundled files and their info (class names, recommended sampling), said once on stderr. One path
    without the other, or a name with paths, is a ValueError naming the fix."""
    check_model_choice(var, vae, model)
    if model is not None:
        from .hub import published_checkpoints
        return (*published_checkpoints(model), {})
    if var is not None:
        return var, vae, {}
    var, vae = default_checkpoints()
    info = default_model_info()
    if announce:
        print("[var_fast] no checkpoint given: using the bundled default model "
              f"({info.get('name', 'small procedural-shapes VAR')}).\n" + PUBLISHED, file=sys.stderr)
    return var, vae, info

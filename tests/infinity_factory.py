"""Tiny Infinity transformers and BSQ VAEs in upstream's state-dict layout, with deterministic random weights.

"2b" has the published 2B layout (shared AdaLN, block chunks, LayerNorm, GELU MLP, level embedding in the
first chunk) at toy sizes; "8b" is a spatial-patchify pair (the transformer reads 4 x the VAE's bits per
token, as infinity_8b with its d14 patchify VAE); "2b_flat" has extra features the keys reveal (flat blocks,
per-block AdaLN, SwiGLU, RMS norms, a learnable ca_gamma) to exercise the config read-off.
"""
from __future__ import annotations

import math
import os
from typing import Dict, Tuple

import torch

from model_factory import fill_deterministic
from var_fast.infinity import BSQVAE, BSQVAEConfig, Infinity, InfinityConfig

TEXT_CHANNELS = 256  # upstream's text pool has Ct5 // 128 heads: the smallest useful multiple of 128

CONFIGS: Dict[str, Tuple[dict, dict]] = {
    "2b": (dict(depth=4, embed_dim=128, num_heads=2, mlp_hidden=512, text_channels=TEXT_CHANNELS, pool_heads=2,
                d_vae=8, block_chunks=2),
           dict(codebook_dim=8, ch=32, encoder_ch_mult=(1, 2, 2), decoder_ch_mult=(1, 2, 2), num_res_blocks=1,
                encoder_down_levels=(0, 1), decoder_up_levels=(1, 2))),
    "8b": (dict(depth=3, embed_dim=128, num_heads=2, mlp_hidden=512, text_channels=TEXT_CHANNELS, pool_heads=2,
                d_vae=16, block_chunks=3),
           dict(codebook_dim=4, ch=32, encoder_ch_mult=(1, 2), decoder_ch_mult=(1, 2), num_res_blocks=1,
                encoder_down_levels=(0,), decoder_up_levels=(1,))),
    "2b_flat": (dict(depth=2, embed_dim=128, num_heads=4, mlp_hidden=256, text_channels=TEXT_CHANNELS, pool_heads=2,
                     d_vae=8, block_chunks=0, shared_aln=False, swiglu=True, rms_norm=True, ca_gamma=True),
                dict(codebook_dim=8, ch=24, encoder_ch_mult=(1, 2), decoder_ch_mult=(1, 2), num_res_blocks=2,
                     encoder_down_levels=(0,), decoder_up_levels=(1,))),
}


def _mean_std(name: str, shape) -> Tuple[float, float]:
    if name.endswith("scale_mul_1H11"):
        return math.log(4.0), 0.5
    if "ada_gss" in name or "ada_lin" in name or "shared_ada_lin" in name:
        return 0.0, 0.15
    if name in ("cfg_uncond", "lvl_embed.weight", "pos_start"):
        return 0.0, 0.5
    if name.endswith("mat_q") and len(shape) == 3:  # the text pool's learned query
        return 0.0, 1.0
    if ("norm" in name and name.endswith(".weight")) or name.endswith("ca_gamma"):
        return 1.0, 0.1
    if name.endswith("bias"):
        return 0.0, 0.05
    fan_in = max(1, int(torch.tensor(shape[1:]).prod().item())) if len(shape) > 1 else 1
    return 0.0, 1.0 / math.sqrt(fan_in)


def make_models(name: str = "2b", seed: int = 0) -> Tuple[Infinity, BSQVAE]:
    t_kw, v_kw = CONFIGS[name]
    model, vae = Infinity(InfinityConfig(**t_kw)), BSQVAE(BSQVAEConfig(**v_kw))
    fill_deterministic(model, seed, _mean_std)
    fill_deterministic(vae, seed + 1, _mean_std)
    return model.eval(), vae.eval()


def random_text(lens, seed: int = 0, channels: int = TEXT_CHANNELS):
    from var_fast.infinity import TextCondition
    g = torch.Generator().manual_seed(seed)
    return TextCondition(torch.randn(sum(lens), channels, generator=g), list(lens))


def save_state_dict(module: torch.nn.Module, path: str) -> str:
    sd = {k: v.contiguous().clone() for k, v in module.state_dict().items()}  # clone: the VAE holds one buffer under two names
    if path.endswith(".safetensors"):
        from safetensors.torch import save_file
        save_file(sd, path)
    else:
        torch.save(sd, path)
    return path


def save_shards(module: torch.nn.Module, folder: str, n: int = 2, fmt: str = "safetensors") -> str:
    """The module's state dict as ``n`` shards plus a Hugging Face index json in ``folder``."""
    import json
    os.makedirs(folder, exist_ok=True)
    sd = {k: v.contiguous().clone() for k, v in module.state_dict().items()}  # clone: the VAE holds one buffer under two names
    keys = sorted(sd)
    weight_map = {}
    ext = "safetensors" if fmt == "safetensors" else "bin"
    for i in range(n):
        fname = f"model-{i + 1:05d}-of-{n:05d}.{ext}"
        part = {k: sd[k] for k in keys[i::n]}
        if fmt == "safetensors":
            from safetensors.torch import save_file
            save_file(part, os.path.join(folder, fname))
        else:
            torch.save(part, os.path.join(folder, fname))
        weight_map.update({k: fname for k in part})
    index = "model.safetensors.index.json" if fmt == "safetensors" else "pytorch_model.bin.index.json"
    with open(os.path.join(folder, index), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    return folder

"""Random-weight VAR + VQVAE pairs with the published checkpoints' shapes, built on the target
device directly (a d30 has 2 B parameters: a CPU init would take minutes)."""
from __future__ import annotations

import math
from typing import Dict, Tuple

import torch

from var_fast.models import PATCH_NUMS_512, VAR, VARConfig, VQVAE, VQVAEConfig

# name -> (VARConfig.for_depth kwargs, VQVAEConfig kwargs); "tiny" and "tiny2" are the CPU modes' models
SHAPES: Dict[str, Tuple[dict, dict]] = {
    "d16": (dict(depth=16), {}), "d20": (dict(depth=20), {}), "d24": (dict(depth=24), {}),
    "d30": (dict(depth=30), {}),
    "d36": (dict(depth=36, shared_aln=True, patch_nums=PATCH_NUMS_512), dict(patch_nums=PATCH_NUMS_512)),
    "tiny": (dict(depth=2, embed_dim=128, num_heads=2, mlp_hidden=512, num_classes=10, patch_nums=(1, 2, 3, 4),
                  Cvae=8, vocab_size=64), dict(vocab_size=64, z_channels=8, ch=32, patch_nums=(1, 2, 3, 4))),
    # the CPU modes' CoDe refiner for "tiny" (benchmarks/gpu_check/collab_bench.py): same classes, codes and scales
    "tiny-refiner": (dict(depth=1, embed_dim=64, num_heads=2, mlp_hidden=256, num_classes=10, patch_nums=(1, 2, 3, 4),
                          Cvae=8, vocab_size=64), dict(vocab_size=64, z_channels=8, ch=32, patch_nums=(1, 2, 3, 4))),
    # the rehearsal's second model, so that its plan has headline cases and others
    "tiny2": (dict(depth=3, embed_dim=64, num_heads=2, mlp_hidden=256, num_classes=10, patch_nums=(1, 2, 4),
                   Cvae=8, vocab_size=64), dict(vocab_size=64, z_channels=8, ch=32, patch_nums=(1, 2, 4))),
}


def configs(name: str) -> Tuple[VARConfig, VQVAEConfig]:
    if name not in SHAPES:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(SHAPES)}")
    var_kw, vae_kw = SHAPES[name]
    var_cfg = VARConfig.for_depth(**var_kw) if "embed_dim" not in var_kw else VARConfig(**var_kw)
    vae_kw = dict(vae_kw)
    vae_kw.setdefault("vocab_size", var_cfg.vocab_size)
    vae_kw.setdefault("z_channels", var_cfg.Cvae)
    return var_cfg, VQVAEConfig(**vae_kw)


@torch.no_grad()
def _randomize(module: torch.nn.Module, gen: torch.Generator) -> None:
    """Weights ~ N(0, 1/fan_in), so activations keep their scale through depth; biases and AdaLN
    small, so no block dominates; norms' weights near 1. Buffers keep their constructed values."""
    for name, p in module.named_parameters():
        if name.endswith("scale_mul_1H11"):
            p.fill_(math.log(4.0))
        elif "norm" in name and name.endswith(".weight"):
            p.normal_(1.0, 0.05, generator=gen)
        elif p.dim() <= 1 or "ada_" in name:
            p.normal_(0.0, 0.02, generator=gen)
        else:
            fan_in = p[0].numel() if p.dim() > 1 else 1
            p.normal_(0.0, 1.0 / math.sqrt(fan_in), generator=gen)


def build(name: str, device, seed: int = 0) -> Tuple[VAR, VQVAE]:
    """(VAR, VQVAE) in float32 on ``device``, eval mode, no gradients."""
    var_cfg, vae_cfg = configs(name)
    device = torch.device(device)
    with torch.device(device):
        var, vae = VAR(var_cfg), VQVAE(vae_cfg)
    gen = torch.Generator(device=device).manual_seed(seed)
    _randomize(var, gen)
    _randomize(vae, gen)
    with torch.no_grad():
        vae.quantize.embedding.weight.normal_(0.0, 1.0, generator=gen)  # spread-out codes
    for module in (var, vae):
        module.requires_grad_(False)
    return var.eval(), vae.eval()

"""Small VAR/VQVAE pairs in the reference checkpoint format, with deterministic random weights.

The weights come from a seeded CPU generator (stable across torch versions), scaled so that every
part of the model matters (strong AdaLN gates, a spread-out codebook): the golden test data in
tests/data/ was produced by running the upstream reference code on exactly these weights.
"""
from __future__ import annotations

import math
import os
from typing import Callable, Dict, Tuple

import torch

from var_fast.models import VAR, VARConfig, VQVAE, VQVAEConfig

TINY_PATCHES = (1, 2, 3, 4)

CONFIGS = {
    # name: (VARConfig kwargs, VQVAEConfig kwargs)
    "d2": (dict(depth=2, embed_dim=128, num_heads=2, mlp_hidden=512, num_classes=10, shared_aln=False,
                attn_l2_norm=True, patch_nums=TINY_PATCHES, Cvae=8, vocab_size=64),
           dict(vocab_size=64, z_channels=8, ch=32, patch_nums=TINY_PATCHES)),
    "d3_shared": (dict(depth=3, embed_dim=128, num_heads=2, mlp_hidden=512, num_classes=10, shared_aln=True,
                       attn_l2_norm=True, patch_nums=TINY_PATCHES, Cvae=8, vocab_size=64),
                  dict(vocab_size=64, z_channels=8, ch=32, patch_nums=TINY_PATCHES)),
}

# Small refiners for collaborative decoding (CoDe) pairs: narrower and shallower than the drafters, as
# the published d16 is to d30, sharing their VQVAE (same vocabulary, Cvae, classes and patch layout).
REFINER_CONFIGS = {
    "r1": (dict(depth=1, embed_dim=64, num_heads=1, mlp_hidden=256, num_classes=10, shared_aln=False,
                attn_l2_norm=True, patch_nums=TINY_PATCHES, Cvae=8, vocab_size=64),
           CONFIGS["d2"][1]),
}
# (drafter, refiner) pairs of the CoDe golden data (tests/data/golden_code.pt, scripts/make_code_golden.py)
CODE_PAIRS = (("d2", "r1"), ("d3_shared", "d2"))


def _std(name: str, shape) -> Tuple[float, float]:
    """(mean, std) of the deterministic init of one tensor."""
    if name.endswith("scale_mul_1H11"):
        return math.log(4.0), 0.5
    if "ada_lin" in name or "ada_gss" in name:
        return 0.0, 0.15
    if name.endswith("embedding.weight"):
        return 0.0, 1.0
    if "norm" in name and name.endswith(".weight"):
        return 1.0, 0.1
    if name.endswith("bias"):
        return 0.0, 0.05
    fan_in = max(1, int(torch.tensor(shape[1:]).prod().item())) if len(shape) > 1 else 1
    return 0.0, 1.0 / math.sqrt(fan_in)


def fill_deterministic(module: torch.nn.Module, seed: int,
                       mean_std: Callable[[str, tuple], Tuple[float, float]] = _std) -> None:
    """Overwrite every parameter with seeded normal values (buffers keep their defaults); ``mean_std(name,
    shape)`` gives each parameter's law (tests/infinity_factory.py passes Infinity's)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(module.named_parameters()):
            mean, std = mean_std(name, p.shape)
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32) * std + mean)


def make_models(name: str = "d2", seed: int = 0) -> Tuple[VAR, VQVAE]:
    var_kw, vae_kw = CONFIGS[name] if name in CONFIGS else REFINER_CONFIGS[name]
    var, vae = VAR(VARConfig(**var_kw)), VQVAE(VQVAEConfig(**vae_kw))
    fill_deterministic(var, seed)
    fill_deterministic(vae, seed + 1)
    return var.eval(), vae.eval()


def save_pair(var: VAR, vae: VQVAE, folder: str, fmt: str = "pth") -> Tuple[str, str]:
    """Write the pair as the reference code would (plain state dicts), or as safetensors."""
    var_path, vae_path = os.path.join(folder, f"var.{fmt}"), os.path.join(folder, f"vae.{fmt}")
    for module, path in ((var, var_path), (vae, vae_path)):
        sd: Dict[str, torch.Tensor] = {k: v.contiguous() for k, v in module.state_dict().items()}
        if fmt == "safetensors":
            from safetensors.torch import save_file
            save_file(sd, path)
        else:
            torch.save(sd, path)
    return var_path, vae_path

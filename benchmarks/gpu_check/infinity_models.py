"""Random-weight Infinity transformers for gpu-check's Infinity stage, built on the target device directly (2 B
parameters: a CPU init would take minutes), and the random text condition they sample from.

"infinity-2b" has the published Infinity-2B transformer's shapes (var_fast.infinity.memory.PUBLISHED: depth 32,
width 2048, 16 heads, MLP 8192, 2048 text channels, d = 32 bits, 8 block chunks, shared AdaLN); "tiny" is the
CPU modes' model with the same layout. The BSQ VAE has the transformer's d bits but small convolutions
(ch 32, one res block per level): the stage times the sampling loop without decoding, and the loop uses only
the VAE's quantizer (bits to codes, the interpolations), which has no weights.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch

from var_fast.infinity import BSQVAE, BSQVAEConfig, Infinity, InfinityConfig, TextCondition
from var_fast.infinity.memory import PUBLISHED, InfinityShapes
from var_fast.infinity.schedules import scale_schedule

from .random_models import _randomize

# the loop's VAE: the transformer's bits, upstream's 16-pixel stride (4 up-sampling levels), small widths
_SMALL_VAE = dict(ch=32, encoder_ch_mult=(1, 1, 1, 1, 1), decoder_ch_mult=(1, 1, 1, 1, 1), num_res_blocks=1)
SHAPES: Dict[str, Tuple[dict, dict]] = {
    "infinity-2b": (dict(PUBLISHED["infinity-2b"][0]), dict(_SMALL_VAE, codebook_dim=32)),
    "tiny": (dict(depth=2, embed_dim=64, num_heads=2, mlp_hidden=256, text_channels=256, pool_heads=2, d_vae=8,
                  block_chunks=2), dict(_SMALL_VAE, codebook_dim=8)),
}
# pixel budget of the timed schedule (1:1), and the short one of the greedy checks
PIXELS = {"infinity-2b": "1M", "tiny": "0.06M"}
CHECK_PIXELS = "0.06M"
# T5 tokens of the random prompt: a caption of a sentence or two (run_infinity's prompts are 10 to 60 tokens)
PROMPT_TOKENS = 64


def configs(name: str) -> Tuple[InfinityConfig, BSQVAEConfig]:
    if name not in SHAPES:
        raise ValueError(f"unknown Infinity model {name!r}; choose from {', '.join(SHAPES)}")
    t_kw, v_kw = SHAPES[name]
    return InfinityConfig(**t_kw), BSQVAEConfig(**v_kw)


def schedule(name: str, pixels: str = "") -> List[Tuple[int, int, int]]:
    """The 1:1 schedule the stage times (1M for infinity-2b: 13 scales up to 64 x 64, 10,521 tokens)."""
    configs(name)
    return scale_schedule(1.0, pixels or PIXELS[name])


def build(name: str, device, seed: int = 0) -> Tuple[Infinity, BSQVAE]:
    """(transformer, VAE) in float32 on ``device``, eval mode, no gradients, weights as random_models draws them."""
    cfg, vae_cfg = configs(name)
    device = torch.device(device)
    with torch.device(device):
        model, vae = Infinity(cfg), BSQVAE(vae_cfg)
    gen = torch.Generator(device=device).manual_seed(seed)
    _randomize(model, gen)
    _randomize(vae, gen)
    for module in (model, vae):
        module.requires_grad_(False)
    return model.eval(), vae.eval()


def shapes(model: Infinity, vae: BSQVAE, name: str) -> InfinityShapes:
    """What var_fast.infinity.memory's estimate needs (parameters counted on these models)."""
    c = model.cfg
    return InfinityShapes(name, depth=c.depth, width=c.embed_dim, heads=c.num_heads, bits=c.d_vae,
                          transformer_parameters=sum(p.numel() for p in model.parameters()),
                          block_parameters=sum(p.numel() for b in model.all_blocks() for p in b.parameters()),
                          vae_parameters=sum(p.numel() for p in vae.parameters()))


def text_condition(batch: int, channels: int, device, tokens: int = PROMPT_TOKENS, seed: int = 0) -> TextCondition:
    """``batch`` prompts of ``tokens`` random T5 features each (no T5 needed: the loop sees only features)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    features = torch.randn(batch * tokens, channels, generator=gen)
    return TextCondition(features.to(device), [tokens] * batch)

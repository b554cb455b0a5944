"""Decoder-stage targets that agree with what the VAR drew: the render nearest to a drawing.

When the VAR draws a training image's scales from the 4x4 one on, its tokens place the shape a little
differently from the image (a cross's arm a pixel or two off, differently in every 16 px block), so the
training image is no longer what those tokens show, and a decoder taught to draw it learns to blur. The
generator knows what a clean shape near the drawing looks like: the same image with its geometry jittered
(centre, rotation, size or pattern period; colours and background unchanged). Among the training image and
``n`` such jittered renders the one nearest to the decoder's drawing at low resolution (so the drawing's bumps
do not decide it) is a target that both fits the tokens and has the renders' straight edges.

    target, moved = nearest_renders(rec.detach(), labels, params, n=24, generator=gen)
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from var_fast.datasets.shapes import render_from_params

Tensor = torch.Tensor

# half-widths of the uniform jitter, in the generator's units (the image spans 2, i.e. 1 = 32 px of 64):
# a shift of up to 2.6 px, 6.9 degrees, a size or period change of up to 0.04 (about 6%)
GEOMETRY_JITTER: Dict[str, float] = {"cx": 0.08, "cy": 0.08, "angle": 0.12, "radius": 0.04, "period": 0.04}
# the comparison's resolution: average-pooled by this factor (16x16 of a 64 px image)
LOWPASS_POOL = 4


def jittered_params(params: Dict[str, Tensor], n: int, generator: Optional[torch.Generator] = None,
                    jitter: Optional[Dict[str, float]] = None) -> Dict[str, Tensor]:
    """(B * (n + 1),) parameters: for every image its own (first) and ``n`` with the geometry jittered uniformly
    within ``jitter`` (half-widths per parameter; ``GEOMETRY_JITTER`` when None)."""
    B = params["cx"].numel()
    out = {k: v.repeat_interleave(n + 1, dim=0).clone() for k, v in params.items()}
    own = (torch.arange(B * (n + 1)) % (n + 1)) == 0
    for key, half in (GEOMETRY_JITTER if jitter is None else jitter).items():
        noise = (torch.rand(B * (n + 1), generator=generator) * 2 - 1) * half
        out[key] = out[key] + torch.where(own, torch.zeros_like(noise), noise)
    return out


@torch.no_grad()
def nearest_renders(drawing: Tensor, labels: Tensor, params: Dict[str, Tensor], n: int,
                    generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor]:
    """For every drawing (B, 3, H, W) in [-1, 1], the render nearest to it (mean squared difference after
    ``LOWPASS_POOL`` x average pooling) among its training image (``params``, as ``render_with_params`` returns
    them) and ``n`` jittered ones; in [-1, 1] on the drawing's device. Also (B,) bool: where a jittered render won."""
    B, size = drawing.shape[0], drawing.shape[-1]
    if labels.numel() != B or params["cx"].numel() != B:
        raise ValueError(f"{B} drawings, {labels.numel()} labels and {params['cx'].numel()} parameter sets")
    if n < 1:
        raise ValueError(f"n must be >= 1 (jittered renders per image), got {n}")
    cand = render_from_params(labels.cpu().repeat_interleave(n + 1), jittered_params(params, n, generator), size)
    cand = cand.mul(2).sub(1).to(drawing.device).view(B, n + 1, *drawing.shape[1:])
    low = F.avg_pool2d(cand.flatten(0, 1), LOWPASS_POOL).view(B, n + 1, -1)
    want = F.avg_pool2d(drawing.float(), LOWPASS_POOL).view(B, 1, -1)
    best = (low - want).pow(2).mean(-1).argmin(1)
    return cand[torch.arange(B), best], best != 0

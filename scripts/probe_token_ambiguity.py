#!/usr/bin/env python
"""How much do a render's coarse tokens leave open, and is drawing the rest independently harmful in itself?

The VAR draws every token of a scale independently given the coarser scales. If the data left a scale's tokens
truly open given the coarser ones (a cross's arm here or two pixels over), independent draws would mix the
choices and bend the edges whatever the model. This probe asks the data: every render is drawn again with its
geometry jittered (``--variants`` times: centre, rotation and size or period within ``BASE_JITTER`` times
``--jitter``; colours unchanged) and encoded; for every k it reports

- ``shared_k``: how many variants keep all tokens of scales 0..k-1 of their render (the images those coarse
  tokens cannot tell apart), and ``differ_k``: the share of scale k's tokens in which they differ from it;
- ``mixed_k``: the edge figure (as scripts/eval_default_model.py's: samples' edge-orientation concentration
  over the renders') of token maps whose scale-k tokens each come at random from the render or from such a
  variant, every other scale the render's own, against ``recon_k``, the renders' reconstructions (same images);
- ``drawn_differ_k``: with the render's scales 0..k-1 forced, the share of the VAR's scale-k draws (the
  recommended cfg / top-k / top-p) that differ from the render's tokens, and ``drawn_mixed_k``: the edge figure
  of token maps whose scale-k tokens each come at random from the render or from those draws, every other scale
  the render's own (the same mixing as ``mixed_k``, with the VAR's draws for the data's alternatives), against
  ``drawn_recon``, the renders' reconstructions;
- ``chained_k``: the edge figure when the VAR draws every scale from k on, each continuing from its own earlier
  draws (ordinary sampling after the render's scales 0..k-1, as scripts/probe_default_model_scales.py), and
  ``parallel_k``: the same draws' count of scales, but each scale drawn from the render's own tokens before it (the
  draws are kept aside and the render's tokens fed on), so no scale continues from the VAR's draws.

If mixing the data's alternatives leaves the edges where the reconstruction has them, independent draws from the
data's own conditionals would not bend them; what the VAR's draws cost then comes from how it fits each scale
(parallel as low as chained) or from continuing from its own draws (chained lower than parallel).

    PYTHONPATH=. python scripts/probe_token_ambiguity.py --classes cross checkerboard
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from var_fast.datasets import CLASS_NAMES  # noqa: E402
from var_fast.datasets.shape_stats import EDGE_SYMMETRY, edge_orientation_concentration  # noqa: E402
from var_fast.datasets.shapes import render_from_params, render_with_params  # noqa: E402
from var_fast.default_model import default_model_info  # noqa: E402
from var_fast.reference.autoregressive import autoregressive_infer_cfg  # noqa: E402
from var_fast.reference.edit import TeacherForcing  # noqa: E402
from nearest_render import jittered_params  # noqa: E402
from probe_default_model_scales import load_sampler, report  # noqa: E402

# the base jitter (x --jitter): about 1 px of shift, 2.9 degrees, 3% of the size or period
BASE_JITTER = {"cx": 0.03, "cy": 0.03, "angle": 0.05, "radius": 0.02, "period": 0.02}
ENCODE_BATCH = 256


@torch.no_grad()
def variant_tokens(vae, labels: torch.Tensor, variants: int, seed: int, jitter: float):
    """The renders (B, 3, H, W) in [0, 1] and, per scale, tokens (B, variants + 1, pn * pn): column 0 the
    render's own, the others its jittered variants'."""
    images, params = render_with_params(labels, torch.Generator().manual_seed(seed))
    scaled = {key: half * jitter for key, half in BASE_JITTER.items()}
    allp = jittered_params(params, variants, torch.Generator().manual_seed(seed + 1), scaled)
    every = render_from_params(labels.repeat_interleave(variants + 1), allp, images.shape[-1]).mul(2).sub(1)
    parts = [vae.img_to_idx(every[i:i + ENCODE_BATCH]) for i in range(0, every.shape[0], ENCODE_BATCH)]
    B = labels.numel()
    return images, [torch.cat([p[si] for p in parts]).view(B, variants + 1, -1) for si in range(len(parts[0]))]


def shared_prefix(tokens: List[torch.Tensor], k: int) -> torch.Tensor:
    """(B, V + 1) bool: the variant has all tokens of scales 0..k-1 of its render (column 0, the render, False)."""
    same = torch.ones(tokens[0].shape[:2], dtype=torch.bool)
    for si in range(k):
        same &= (tokens[si] == tokens[si][:, :1]).all(-1)
    same[:, 0] = False
    return same


def differing_share(tokens: List[torch.Tensor], k: int, shared: torch.Tensor) -> float:
    """The share of scale k's tokens in which the variants marked ``shared`` differ from their render
    (nan without any)."""
    differ = (tokens[k] != tokens[k][:, :1]).float().mean(-1)  # (B, V + 1)
    return differ[shared].mean().item() if shared.any() else float("nan")


def mixed_tokens(tokens: List[torch.Tensor], k: int, shared: torch.Tensor, gen: torch.Generator):
    """For every render with a variant marked ``shared`` (the first one): its own tokens per scale (P, pn * pn)
    and the same with each scale-k token taken at random from the render or that variant. Returns
    (rows, own, mixed); rows index the renders used."""
    rows = shared.any(1).nonzero().flatten()
    first = shared[rows].float().argmax(1)
    own = [t[rows, 0] for t in tokens]
    return rows, own, mixed_with(own, k, tokens[k][rows, first], gen)


class KeepDrawsFeedOwn:
    """A teacher_force hook: scales 0..k-1 are the render's; from k on the VAR's draws are kept in ``draws`` while
    the render's own tokens go into f_hat, so every scale is drawn from the render's tokens before it."""

    def __init__(self, own: List[torch.Tensor], k: int, embedding: torch.nn.Embedding):
        self.own, self.k, self.embedding, self.draws = own, k, embedding, []

    def __call__(self, si: int, idx_Bl: torch.Tensor, h_BChw: torch.Tensor):
        if si >= self.k:
            self.draws.append(idx_Bl.clone())
        B, C, pn, _ = h_BChw.shape
        return self.own[si], self.embedding(self.own[si]).transpose(1, 2).reshape(B, C, pn, pn)


@torch.no_grad()
def chained_and_parallel(var, vae, labels: torch.Tensor, own: List[torch.Tensor], k: int, seed: int, sampling):
    """Token maps (per scale) of the render's scales 0..k-1 and the VAR's draws from k on: drawn as in sampling,
    each scale after the VAR's own draws (chained), and each scale after the render's own tokens (parallel)."""
    keep = [torch.full_like(t, si < k, dtype=torch.bool) for si, t in enumerate(own)]
    _, chained = autoregressive_infer_cfg(var, vae, labels, torch.Generator().manual_seed(seed),
                                          teacher_force=TeacherForcing(own, keep, vae.quantize.embedding.weight),
                                          **sampling)
    hook = KeepDrawsFeedOwn(own, k, vae.quantize.embedding)
    autoregressive_infer_cfg(var, vae, labels, torch.Generator().manual_seed(seed), teacher_force=hook, **sampling)
    return chained, own[:k] + hook.draws


def mixed_with(own: List[torch.Tensor], k: int, other: torch.Tensor, gen: torch.Generator) -> List[torch.Tensor]:
    """``own`` with each scale-k token taken at random from it or from ``other`` (same shape)."""
    mixed = [t.clone() for t in own]
    mixed[k] = torch.where(torch.rand(own[k].shape, generator=gen) < 0.5, other, own[k])
    return mixed


@torch.no_grad()
def probe(sampler, class_name: str, n: int, variants: int, jitter: float, seed: int, sampling: Dict) -> dict:
    var, vae = sampler.var, sampler.vae
    labels = torch.full((n,), CLASS_NAMES.index(class_name))
    images, tokens = variant_tokens(vae, labels, variants, 5000 + seed, jitter)
    own = [t[:, 0] for t in tokens]
    order = torch.full((n,), EDGE_SYMMETRY.get(class_name, 1))
    truth = edge_orientation_concentration(images, order).mean().item()
    out = {"class": class_name, "renders": round(truth, 3), "variants": variants, "jitter": jitter}

    def figure(toks, o):  # edge figure of the token maps' images, over the renders'
        return round(edge_orientation_concentration(vae.idx_to_img(toks).add(1).div(2), o).mean().item() / truth, 3)

    gen = torch.Generator().manual_seed(seed)
    out["drawn_recon"] = figure(own, order)
    for k in range(1, len(tokens)):
        shared = shared_prefix(tokens, k)
        out[f"shared_{k}"] = int(shared.sum())
        out[f"differ_{k}"] = round(differing_share(tokens, k, shared), 3)
        if shared.any():
            rows, own_rows, mixed = mixed_tokens(tokens, k, shared, gen)
            out[f"recon_{k}"], out[f"mixed_{k}"] = figure(own_rows, order[rows]), figure(mixed, order[rows])
        chained, parallel = chained_and_parallel(var, vae, labels, own, k, seed, sampling)
        drawn = chained[k]  # scale k drawn after the render's scales 0..k-1
        out[f"drawn_differ_{k}"] = round((drawn != own[k]).float().mean().item(), 3)
        out[f"drawn_mixed_{k}"] = figure(mixed_with(own, k, drawn, gen), order)
        out[f"chained_{k}"], out[f"parallel_{k}"] = figure(chained, order), figure(parallel, order)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", default="", help="folder with default_var.pth and default_vae.pth (default: the bundled)")
    p.add_argument("--classes", nargs="+", default=["cross", "checkerboard"], choices=CLASS_NAMES)
    p.add_argument("--per-class", type=int, default=60)
    p.add_argument("--variants", type=int, default=63, help="jittered variants of every render")
    p.add_argument("--jitter", type=float, default=1.0, help="times the base jitter (about 1 px, 2.9 degrees, 3%%)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default="", help="also write the figures here")
    args = p.parse_args(argv)
    if args.per_class < 1 or args.variants < 1 or args.jitter <= 0:
        p.error("--per-class and --variants must be >= 1 and --jitter > 0")
    rec = default_model_info().get("sampling", {})
    sampling = dict(cfg=rec.get("cfg", 3.0), top_k=rec.get("top_k", 0), top_p=rec.get("top_p", 0.0))
    sampler = load_sampler(args.dir)
    report([probe(sampler, c, args.per_class, args.variants, args.jitter, args.seed, sampling) for c in args.classes],
           args.json)


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Does guidance at the coarse scales straighten the default model's edges? Sample with another guidance schedule.

Upstream's ``autoregressive_infer_cfg`` guides scale si with t = cfg * si / (S - 1): none at the 1x1
scale, a seventh of cfg at the 2x2 scale of eight, the full cfg only at the last. The scale probes
put the bends at the coarse draws, which upstream guides least. This draws the bundled model's
samples (reference loop, the recommended top-k / top-p, the seeds of scripts/eval_default_model.py)
with one guidance t per scale and measures them as that script does:

    upstream     t = cfg * si / (S - 1) (the sampler's; the same images as eval_default_model.py)
    constant     t = cfg at every scale
    from-2x2     t = 0 at the 1x1 scale (as upstream), cfg at every later one
    from-3x3     upstream's t at the 1x1 and 2x2 scales, cfg at every later one

    PYTHONPATH=. python scripts/probe_guidance_schedule.py --schedule upstream from-2x2 --seed 0 1
    PYTHONPATH=. python scripts/probe_guidance_schedule.py --guidance 0 3 3 3 2 2 2 2   # one t per scale

Not a sampler option: the sampler keeps upstream's schedule (docs/default_model.md says what these cost).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import List, Optional, Sequence

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

from eval_default_model import figures  # noqa: E402
from probe_default_model_scales import load_sampler  # noqa: E402
from var_fast.datasets import balanced_labels, render  # noqa: E402
from var_fast.datasets.shape_classifier import train_classifier  # noqa: E402
from var_fast.default_model import default_model_info  # noqa: E402
from var_fast.reference.autoregressive import autoregressive_infer_cfg  # noqa: E402

SCHEDULES = ("upstream", "constant", "from-2x2", "from-3x3")


def guidance_schedule(name: str, cfg: float, num_scales: int) -> Optional[List[float]]:
    """The guidance t of every scale for a named schedule (None: upstream's, which the sampler computes)."""
    ramp = [cfg * si / (num_scales - 1) for si in range(num_scales)]
    if name == "upstream":
        return None
    if name == "constant":
        return [cfg] * num_scales
    if name == "from-2x2":
        return [ramp[0]] + [cfg] * (num_scales - 1)
    if name == "from-3x3":
        return ramp[:2] + [cfg] * (num_scales - 2)
    raise ValueError(f"unknown guidance schedule {name!r}; known: {', '.join(SCHEDULES)}")


@torch.no_grad()
def draw(sampler, labels: torch.Tensor, seed: int, cfg: float, top_k, top_p: float,
         guidance: Optional[Sequence[float]]) -> torch.Tensor:
    """The images the reference sampler draws for ``labels`` at ``seed``, with ``guidance`` in place of
    upstream's ramp (None: exactly ``sampler.sample(labels, seed=seed, ...)``)."""
    rng = torch.Generator().manual_seed(int(seed))
    f_hat, _ = autoregressive_infer_cfg(sampler.var, sampler.vae, labels, rng, cfg=cfg, top_k=top_k, top_p=top_p,
                                        guidance=guidance)
    return sampler.vae.fhat_to_img(f_hat).add(1).div(2)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", default="", help="folder with default_var.pth and default_vae.pth (default: the bundled)")
    p.add_argument("--schedule", nargs="+", default=["upstream", "from-2x2"], choices=SCHEDULES)
    p.add_argument("--guidance", type=float, nargs="+", default=None, metavar="T",
                   help="one guidance t per scale (measured besides --schedule's)")
    p.add_argument("--cfg", type=float, default=None, help="default: the model's recommended setting")
    p.add_argument("--per-class", type=int, default=30)
    p.add_argument("--seed", type=int, nargs="+", default=[0])
    p.add_argument("--json", default="", help="also write the figures here")
    args = p.parse_args(argv)
    rec = default_model_info().get("sampling", {})
    cfg = rec.get("cfg", 3.0) if args.cfg is None else args.cfg
    top_k, top_p = rec.get("top_k", 0), rec.get("top_p", 0.0)
    sampler = load_sampler(args.dir)
    S = len(sampler.var.patch_nums)
    runs = [(name, guidance_schedule(name, cfg, S)) for name in args.schedule]
    if args.guidance is not None:
        if len(args.guidance) != S or any(not (math.isfinite(t) and t >= 0) for t in args.guidance):
            p.error(f"--guidance needs one finite t >= 0 per scale ({S} scales), got {args.guidance}")
        runs.append(("explicit", list(args.guidance)))
    labels = balanced_labels(args.per_class)
    classifier = train_classifier()
    rows = []
    for name, guidance in runs:
        for seed in args.seed:
            images = draw(sampler, labels, seed, cfg, top_k, top_p, guidance)
            reference = render(labels, torch.Generator().manual_seed(1000 + seed))
            reference2 = render(labels, torch.Generator().manual_seed(2000 + seed))
            row = {"schedule": name, "guidance": guidance, "cfg": cfg, "seed": seed}
            row.update(figures(images, labels, classifier, reference, reference2))
            rows.append(row)
            print(json.dumps({k: row[k] for k in ("schedule", "seed", "class_accuracy", "colour_frechet")}
                             | {"edge_ratio": {c: e["ratio"] for c, e in row["edge_concentration"].items()}}))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
            fh.write("\n")


if __name__ == "__main__":
    main()

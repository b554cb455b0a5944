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

Autoguidance (Karras et al., "Guiding a Diffusion Model with a Bad Version of Itself", NeurIPS 2024): class
guidance moves a sample towards its class's most likely form and so loses variety; autoguidance moves it away
from the errors of a smaller, shorter-trained model of the same data instead. ``--bad-var FILE --autoguidance W``
adds W (good - bad) of the two models' conditional logits to every scale's guided logits, both models fed the
same drawn tokens (W = 0: upstream's draw):

    PYTHONPATH=. python scripts/probe_guidance_schedule.py --schedule upstream --bad-var SMALL/default_var.pth \
        --autoguidance 0.5 1 2

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
from var_fast.reference.autoregressive import ScaleState, advance, autoregressive_infer_cfg  # noqa: E402
from var_fast.reference.sampling import sample_top_k_top_p_  # noqa: E402

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


def load_bad_var(path: str, var, vae):
    """The guiding ("bad") VAR of ``path``: its layout read off the weights; same scales, classes and VQVAE as
    ``var``."""
    from var_fast.checkpoint import check_pair, load_strict, read_state_dict, var_config_from_state_dict
    from var_fast.models import VAR
    sd = read_state_dict(path, "VAR")
    cfg = var_config_from_state_dict(sd, path, patch_nums=var.patch_nums)
    check_pair(cfg, vae.config, path, "the model's VQVAE")
    if cfg.num_classes != var.num_classes:
        raise ValueError(f"--bad-var {path!r} has {cfg.num_classes} classes, the model {var.num_classes}")
    bad = VAR(cfg)
    load_strict(bad, sd, path, "VAR")
    return bad.eval()


@torch.no_grad()
def draw_autoguided(sampler, bad_var, labels: torch.Tensor, seed: int, cfg: float, top_k: int, top_p: float,
                    weight: float, guidance: Optional[Sequence[float]] = None) -> torch.Tensor:
    """``draw`` with autoguidance: each scale's logits are the model's guided ones (upstream's ramp, or
    ``guidance``) plus ``weight`` (conditional logits of the model - those of ``bad_var``); both models
    continue from the same drawn tokens. ``weight`` 0 draws what ``draw`` draws."""
    var, vae = sampler.var, sampler.vae
    S = len(var.patch_nums)
    rng = torch.Generator().manual_seed(int(seed))
    good, bad = ScaleState(var, labels), ScaleState(bad_var, labels)
    B = labels.shape[0]
    for si in range(S):
        logits_good = var.forward_scale(good.next_map, good.cond_BD, good.caches)
        logits_bad = bad_var.forward_scale(bad.next_map, bad.cond_BD, bad.caches)
        t = cfg * si / (S - 1) if guidance is None else guidance[si]
        logits = (1 + t) * logits_good[:B] - t * logits_good[B:]
        if weight:
            logits = logits + weight * (logits_good[:B] - logits_bad[:B])
        idx_Bl = sample_top_k_top_p_(logits, top_k=top_k, top_p=top_p, rng=rng)
        advance(good, vae, si, logits, rng, top_k, top_p, 1.0, False, idx_Bl=idx_Bl)
        advance(bad, vae, si, logits_bad[:B], rng, top_k, top_p, 1.0, False, idx_Bl=idx_Bl)
    return vae.fhat_to_img(good.f_hat).add(1).div(2)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", default="", help="folder with default_var.pth and default_vae.pth (default: the bundled)")
    p.add_argument("--schedule", nargs="+", default=["upstream", "from-2x2"], choices=SCHEDULES)
    p.add_argument("--guidance", type=float, nargs="+", default=None, metavar="T",
                   help="one guidance t per scale (measured besides --schedule's)")
    p.add_argument("--bad-var", default="", metavar="FILE",
                   help="autoguidance: the smaller, shorter-trained VAR whose errors to guide away from")
    p.add_argument("--autoguidance", type=float, nargs="+", default=None, metavar="W",
                   help="autoguidance weights, each measured with every schedule (needs --bad-var)")
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
    if bool(args.bad_var) != (args.autoguidance is not None):
        p.error("--bad-var and --autoguidance W go together (autoguidance needs the bad model and its weights)")
    if args.autoguidance is not None and any(not (math.isfinite(w) and w >= 0) for w in args.autoguidance):
        p.error(f"--autoguidance weights must be finite and >= 0, got {args.autoguidance}")
    bad_var = load_bad_var(args.bad_var, sampler.var, sampler.vae) if args.bad_var else None
    labels = balanced_labels(args.per_class)
    classifier = train_classifier()
    rows = []
    for name, guidance in runs:
        for weight in (args.autoguidance or [None]):
            for seed in args.seed:
                if weight is None:
                    images = draw(sampler, labels, seed, cfg, top_k, top_p, guidance)
                else:
                    images = draw_autoguided(sampler, bad_var, labels, seed, cfg, top_k, top_p, weight, guidance)
                reference = render(labels, torch.Generator().manual_seed(1000 + seed))
                reference2 = render(labels, torch.Generator().manual_seed(2000 + seed))
                row = {"schedule": name, "guidance": guidance, "cfg": cfg, "autoguidance": weight, "seed": seed}
                row.update(figures(images, labels, classifier, reference, reference2))
                rows.append(row)
                print(json.dumps({k: row[k] for k in ("schedule", "autoguidance", "seed", "class_accuracy",
                                                      "colour_frechet")}
                                 | {"edge_ratio": {c: e["ratio"] for c, e in row["edge_concentration"].items()},
                                    "orientation": {c: e["samples"] for c, e in row["orientation_agreement"].items()}}))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
            fh.write("\n")


if __name__ == "__main__":
    main()

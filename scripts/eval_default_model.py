#!/usr/bin/env python
"""Measure the bundled default model (or any shapes model) against its training set: three figures,
and two more checks.

    PYTHONPATH=. python scripts/eval_default_model.py                         # the bundled files
    PYTHONPATH=. python scripts/eval_default_model.py --dir build/run --cfg 2 # another pair / setting
    PYTHONPATH=. python scripts/eval_default_model.py --seed 0 1 2 3 --backend fast  # four draws, pooled

1. class accuracy: the share of samples that a classifier trained on the generator's own images
   (var_fast.datasets.shape_classifier, never on samples) recognises as the class they were drawn for;
2. straight edges: per straight-edged class the mean edge-orientation concentration R_n of the
   samples and of as many training images (var_fast.datasets.shape_stats), and their ratio;
3. colour / background: the Frechet distance between per-image colour features (foreground and
   background mean RGB, background gradient) of the samples and of the training set, next to the
   same distance between two independent training sets of the same size (the noise floor);
4. foreground texture: the brightness's standard deviation inside the shapes, away from their edges
   (shape_stats.foreground_texture; a render's shape is flat, 0): blotches a decoder draws into flat areas;
5. orientation variety: per straight-edged class how alike the samples' edge orientations are
   (shape_stats.orientation_agreement; 0 turned every way, 1 all in one pose), beside the renders'.

With --vae-only FILE the same figures are measured on a VQVAE's reconstructions of training renders
(no VAR): what the tokens can carry at best. --no-quant skips the quantizer (the plain autoencoder
path, for a snapshot taken during the training script's autoencoder phase).

    PYTHONPATH=. python scripts/eval_default_model.py --vae-only build/state/vae_snapshot.pth --no-quant
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Optional, Sequence

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import var_fast  # noqa: E402
from var_fast.datasets import CLASS_NAMES, NUM_CLASSES, balanced_labels, render  # noqa: E402
from var_fast.datasets.shape_classifier import predict, train_classifier  # noqa: E402
from var_fast.datasets.shape_stats import (COLOUR_FEATURE_NAMES, EDGE_SYMMETRY, colour_feature_shifts,  # noqa: E402
                                           colour_features, edge_orientation_concentration, foreground_texture,
                                           frechet_distance, orientation_agreement)
from var_fast.default_model import default_model_info  # noqa: E402


def edge_orders(labels: torch.Tensor) -> torch.Tensor:
    return torch.tensor([EDGE_SYMMETRY.get(CLASS_NAMES[k], 1) for k in labels.tolist()])


def figures(images: torch.Tensor, labels: torch.Tensor, classifier, reference: torch.Tensor,
            reference2: torch.Tensor) -> dict:
    """The figures of ``images`` (drawn for ``labels``) against ``reference`` renders of the
    same labels (``reference2``: a second, independent set, for the noise floor)."""
    pred = predict(classifier, images)
    per_class = {name: (pred[labels == k] == k).float().mean().item() for k, name in enumerate(CLASS_NAMES)}
    orders = edge_orders(labels)
    r_s, r_t = edge_orientation_concentration(images, orders), edge_orientation_concentration(reference, orders)
    edges, turns = {}, {}
    for k, name in enumerate(CLASS_NAMES):
        if name in EDGE_SYMMETRY:
            s, t = r_s[labels == k].mean().item(), r_t[labels == k].mean().item()
            edges[name] = {"samples": round(s, 3), "training": round(t, 3), "ratio": round(s / t, 3)}
            turns[name] = {"samples": round(orientation_agreement(images[labels == k], orders[labels == k]), 3),
                           "training": round(orientation_agreement(reference[labels == k], orders[labels == k]), 3)}
    f_ref = colour_features(reference)
    return {
        "class_accuracy": (pred == labels).float().mean().item(),
        "class_accuracy_per_class": {k: round(v, 3) for k, v in per_class.items()},
        "edge_concentration": edges,
        "edge_ratio_min": min(e["ratio"] for e in edges.values()),
        # shapes turned every way as rendered, not drawn in one pose (0: spread, 1: all alike)
        "orientation_agreement": turns,
        "colour_frechet": frechet_distance(colour_features(images), f_ref),
        "colour_feature_shifts": colour_feature_shifts(colour_features(images), f_ref),
        "colour_frechet_noise_floor": frechet_distance(colour_features(reference2), f_ref),
        # blotches inside a shape: the brightness's spread in its flat inside (renders: 0)
        "foreground_texture": round(foreground_texture(images).nanmean().item(), 5),
        "foreground_texture_training": round(foreground_texture(reference).nanmean().item(), 5),
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", default="", help="folder with default_var.pth and default_vae.pth (default: the bundled)")
    p.add_argument("--per-class", type=int, default=30)
    p.add_argument("--cfg", type=float, default=None, help="default: the model's recommended setting")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--temperature", type=float, nargs="+", default=None,
                   help="one value or one per scale (var_fast.schedules); default: the model's recommended setting")
    p.add_argument("--seed", type=int, nargs="+", default=[0],
                   help="one draw per seed (one classifier for all); several: each draw's figures and the pooled accuracy")
    p.add_argument("--backend", choices=("reference", "fast"), default="reference",
                   help="the sampler (the fast one draws from its own random stream: other draws of the same model)")
    p.add_argument("--json", default="", help="also write the figures here")
    p.add_argument("--vae-only", default="", metavar="FILE",
                   help="measure this VQVAE's reconstructions of training renders instead of samples")
    p.add_argument("--no-quant", action="store_true", help="with --vae-only: without the quantizer")
    p.add_argument("--patch-nums", type=int, nargs="+", default=None,
                   help="with --vae-only: the quantizer's scales (default: the bundled model's)")
    args = p.parse_args(argv)
    if args.patch_nums and not args.vae_only:
        p.error("--patch-nums needs --vae-only FILE (a VAR's scales are read off its weights)")
    if args.no_quant and not args.vae_only:
        p.error("--no-quant needs --vae-only FILE")
    if args.vae_only and len(args.seed) > 1:
        p.error("--vae-only measures one set of renders: give one --seed")
    if args.vae_only:
        out = reconstruction_figures(args.vae_only, args.per_class, args.seed[0], args.no_quant, args.patch_nums)
    else:
        out = sample_figures(args)
    print(json.dumps(out, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)
            fh.write("\n")


def reconstruction_figures(path: str, per_class: int, seed: int, no_quant: bool,
                           patch_nums: Optional[Sequence[int]] = None) -> dict:
    """The figures of a VQVAE's reconstructions of ``per_class`` renders of every class (a third
    independent set of renders, seed 3000 + seed) against the usual training references."""
    from var_fast.checkpoint import read_state_dict, vae_config_from_state_dict
    from var_fast.models import VQVAE

    sd = read_state_dict(path, "VQVAE")
    patch_nums = patch_nums or default_model_info().get("patch_nums", (1, 2, 3, 4, 6, 8))
    vae = VQVAE(vae_config_from_state_dict(sd, path, patch_nums=patch_nums)).eval()
    vae.load_state_dict(sd)
    labels = balanced_labels(per_class)
    x = render(labels, torch.Generator().manual_seed(3000 + seed)).mul(2).sub(1)
    t0 = time.time()
    with torch.no_grad():
        recs = []
        for chunk in x.split(50):
            if no_quant:
                recs.append(vae.decoder(vae.post_quant_conv(vae.quant_conv(vae.encoder(chunk)))).clamp(-1, 1))
            else:
                recs.append(vae.idx_to_img(vae.img_to_idx(chunk)))
        rec = torch.cat(recs)
    out = {"vae": path, "quantizer": not no_quant, "patch_nums": list(patch_nums), "per_class": per_class, "seed": seed,
           "seconds": round(time.time() - t0, 1), "l1_01": round((rec - x).abs().mean().item() / 2, 4)}
    images = rec.add(1).div(2)
    reference = render(labels, torch.Generator().manual_seed(1000 + seed))
    reference2 = render(labels, torch.Generator().manual_seed(2000 + seed))
    out.update(figures(images, labels, train_classifier(), reference, reference2))
    # does each colour feature pass at all? its correlation between the originals and their reconstructions
    f_in, f_rec = colour_features(x.add(1).div(2)), colour_features(images)
    out["colour_feature_correlation"] = {
        name: round(torch.corrcoef(torch.stack([f_in[:, i], f_rec[:, i]]))[0, 1].item(), 3)
        for i, name in enumerate(COLOUR_FEATURE_NAMES)}
    return out


def sample_figures(args) -> dict:
    """The figures of one draw per ``args.seed``: flat for one seed; for several, each draw's under
    "draws" and the accuracy of all samples together under "pooled_class_accuracy"."""
    rec = default_model_info().get("sampling", {})
    cfg = rec.get("cfg", 3.0) if args.cfg is None else args.cfg
    top_k = rec.get("top_k", 0) if args.top_k is None else args.top_k
    top_p = rec.get("top_p", 0.0) if args.top_p is None else args.top_p
    temperature = rec.get("temperature", 1.0) if args.temperature is None else args.temperature
    if isinstance(temperature, list) and len(temperature) == 1:
        temperature = temperature[0]
    paths = (os.path.join(args.dir, "default_var.pth"), os.path.join(args.dir, "default_vae.pth")) if args.dir else ()
    sampler = var_fast.load(*paths, device="cpu", backend=args.backend)
    labels = balanced_labels(args.per_class)
    classifier = train_classifier()
    draws = []
    for seed in args.seed:
        t0 = time.time()
        images = sampler.sample(labels, cfg=cfg, top_k=top_k, top_p=top_p, seed=seed,
                                temperature=temperature).cpu()
        t_sample = time.time() - t0
        reference = render(labels, torch.Generator().manual_seed(1000 + seed))
        reference2 = render(labels, torch.Generator().manual_seed(2000 + seed))
        draw = {"checkpoints": args.dir or "bundled", "backend": args.backend, "per_class": args.per_class,
                "cfg": cfg, "top_k": top_k, "top_p": top_p, "temperature": temperature, "seed": seed,
                "sample_seconds": round(t_sample, 1)}
        draw.update(figures(images, labels, classifier, reference, reference2))
        draws.append(draw)
    if len(draws) == 1:
        return draws[0]
    return {"draws": draws, "seeds": list(args.seed), "samples": len(labels) * len(draws),
            "pooled_class_accuracy": sum(d["class_accuracy"] for d in draws) / len(draws),
            "class_accuracy_range": [min(d["class_accuracy"] for d in draws), max(d["class_accuracy"] for d in draws)]}


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Which scales bend the default model's edges? Sample with the first k scales taken from training renders.

For each class and each k = 0 .. S-1, the renders' own tokens are forced into scales 0..k-1 (the
reference sampler's ``teacher_force`` hook, as zero-shot editing uses it) and the model samples the
rest with the given cfg / top-k / top-p. The straight-edge figure of scripts/eval_default_model.py
(edge-orientation concentration of the images over that of the renders) then says how much each
sampled scale loses: k = 0 is ordinary sampling, the VQVAE's reconstruction of the renders (all
scales forced) is the best the tokens allow.

    PYTHONPATH=. python scripts/probe_default_model_scales.py --classes cross checkerboard square
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import var_fast  # noqa: E402
from var_fast.datasets import CLASS_NAMES, render  # noqa: E402
from var_fast.datasets.shape_stats import EDGE_SYMMETRY, edge_orientation_concentration  # noqa: E402
from var_fast.default_model import default_model_info  # noqa: E402
from var_fast.reference.autoregressive import autoregressive_infer_cfg  # noqa: E402


def forcing_first(tokens, k: int, embedding):
    """A teacher_force hook that replaces the drawn tokens of scales < k by ``tokens``."""
    def force(si, idx_Bl, h_BChw):
        if si >= k:
            return idx_Bl, h_BChw
        B, C, pn, _ = h_BChw.shape
        return tokens[si], embedding(tokens[si]).transpose(1, 2).reshape(B, C, pn, pn)
    return force


@torch.no_grad()
def probe(sampler, class_name: str, n: int, cfg: float, top_k: int, top_p: float, seed: int) -> dict:
    var, vae = sampler.var, sampler.vae
    labels = torch.full((n,), CLASS_NAMES.index(class_name))
    renders = render(labels, torch.Generator().manual_seed(4000 + seed))
    order = torch.full((n,), EDGE_SYMMETRY.get(class_name, 1))
    truth = edge_orientation_concentration(renders, order).mean().item()
    tokens = vae.img_to_idx(renders.mul(2).sub(1))
    recon = vae.idx_to_img(tokens).add(1).div(2)
    out = {"class": class_name, "renders": round(truth, 3),
           "reconstruction": round(edge_orientation_concentration(recon, order).mean().item() / truth, 3)}
    for k in range(len(var.patch_nums)):
        f_hat, _ = autoregressive_infer_cfg(var, vae, labels, torch.Generator().manual_seed(seed), cfg=cfg,
                                            top_k=top_k, top_p=top_p,
                                            teacher_force=forcing_first(tokens, k, vae.quantize.embedding))
        images = vae.fhat_to_img(f_hat).add(1).div(2)
        out[f"forced_{k}"] = round(edge_orientation_concentration(images, order).mean().item() / truth, 3)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", default="", help="folder with default_var.pth and default_vae.pth (default: the bundled)")
    p.add_argument("--classes", nargs="+", default=["cross", "checkerboard", "square"], choices=CLASS_NAMES)
    p.add_argument("--per-class", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default="", help="also write the figures here")
    args = p.parse_args(argv)
    rec = default_model_info().get("sampling", {})
    sampler = load_sampler(args.dir)
    rows = [probe(sampler, c, args.per_class, rec.get("cfg", 3.0), rec.get("top_k", 0), rec.get("top_p", 0.0),
                  args.seed) for c in args.classes]
    report(rows, args.json)


def load_sampler(folder: str):
    """The reference sampler of default_var.pth / default_vae.pth in ``folder`` (the bundled model if empty)."""
    paths = (os.path.join(folder, "default_var.pth"), os.path.join(folder, "default_vae.pth")) if folder else ()
    return var_fast.load(*paths, device="cpu", backend="reference")


def report(rows, json_path: str) -> None:
    """One JSON line per row on stdout; all rows into ``json_path`` too if given."""
    for row in rows:
        print(json.dumps(row))
    if json_path:
        with open(json_path, "w") as fh:
            json.dump(rows, fh, indent=2)
            fh.write("\n")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Which classes' tokens does a shapes VAR predict worst? Its held-out loss per class and per scale.

The training script logs the teacher-forced cross-entropy of 1,000 held-out images (the generator's
seed + 6 stream, never trained on) overall and per scale; this splits it by class, so a fine-tune's
effect on the hard classes (checkerboards, crosses, stars) shows apart from the easy ones.

    PYTHONPATH=. python scripts/heldout_loss_by_class.py                      # the bundled model
    PYTHONPATH=. python scripts/heldout_loss_by_class.py --var build/run/default_var.pth --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import var_fast  # noqa: E402
from var_fast.datasets import CLASS_NAMES  # noqa: E402
from var_fast.default_model import default_model_info  # noqa: E402
from train_default_model import encode_heldout, heldout_token_losses, scale_means, teacher_forcing_input  # noqa: E402


def loss_by_class(var, vae, images: int, seed: int, image_size: int) -> dict:
    """{"all": {...}, class name: {...}} with the mean loss and the per-scale means of each."""
    tokens, labels = encode_heldout(vae, argparse.Namespace(seed=seed, val_images=images, image_size=image_size),
                                    torch.device("cpu"))
    with torch.no_grad():
        x = teacher_forcing_input(vae.quantize, tokens)
    loss = heldout_token_losses(var, x, torch.cat(tokens, dim=1), labels)
    rows = {"all": loss}
    rows.update({name: loss[labels == k] for k, name in enumerate(CLASS_NAMES) if (labels == k).any()})
    return {name: {"images": len(part), "loss": round(part.mean().item(), 4),
                   "per_scale": [round(v, 3) for v in scale_means(part, var.patch_nums)]}
            for name, part in rows.items()}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--var", default="", help="VAR checkpoint (default: the bundled)")
    p.add_argument("--vae", default="", help="VQVAE checkpoint (default: the bundled)")
    p.add_argument("--images", type=int, default=1000, help="held-out images (the training script's --val-images)")
    p.add_argument("--seed", type=int, default=0, help="the training run's --seed (the stream is seed + 6)")
    p.add_argument("--json", default="", help="also write the figures here")
    args = p.parse_args(argv)
    if args.images < 1:
        p.error(f"--images must be >= 1, got {args.images}")
    info = default_model_info()
    assets = os.path.join(ROOT, "var_fast", "assets")
    var_path = args.var or os.path.join(assets, info["var_checkpoint"])
    vae_path = args.vae or os.path.join(assets, info["vae_checkpoint"])
    for flag, path in (("--var", var_path), ("--vae", vae_path)):
        if not os.path.isfile(path):
            p.error(f"{flag}: no such file {path!r}")
    model = var_fast.load(var_ckpt=var_path, vae_ckpt=vae_path, backend="reference")
    out = loss_by_class(model.var, model.vae, args.images, args.seed, info["image_size"])
    print(f"held-out loss of {var_path} ({args.images} images), per scale {' '.join(f'{pn}x{pn}' for pn in model.var.patch_nums)}")
    for name, row in out.items():
        print(f"{name:13s} {row['images']:5d} images  {row['loss']:.3f} | " + " ".join(f"{v:.2f}" for v in row["per_scale"]))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"var": var_path, "vae": vae_path, "images": args.images, "seed": args.seed, "loss": out}, fh,
                      indent=2)
            fh.write("\n")


if __name__ == "__main__":
    main()

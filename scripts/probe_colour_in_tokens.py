#!/usr/bin/env python
"""Do the default model's tokens carry the colour statistics that scripts/eval_default_model.py compares?

A small CNN (the same for every input) learns the 7 colour features of `var_fast.datasets.shape_stats` (foreground
and background mean RGB, background gradient) of training renders from

* ``image``: the render itself, average-pooled to the latent's size (what the features are made of, at the
  resolution of the tokens: the reachable figure);
* ``f_hat``: the VQVAE's f_hat of the render over every scale (what the VAR's tokens give the decoder);

and the script prints each input's R^2 per feature on other renders. A feature the image gives and f_hat does not
is lost in the tokenizer (encoder and quantizer), so no decoder or VAR trained on these tokens can bring it back.
``decoder_correlation`` is each feature's correlation between the held-out renders and their reconstructions.

    PYTHONPATH=. python scripts/probe_colour_in_tokens.py --json probe.json     # about 8 minutes on 2 cores
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import var_fast  # noqa: E402
from var_fast.datasets import NUM_CLASSES, render  # noqa: E402
from var_fast.datasets.shape_stats import COLOUR_FEATURE_NAMES, colour_features  # noqa: E402

CHUNK = 500  # renders encoded at a time (the VQVAE's activations of thousands at once do not fit in memory)


def probe_net(channels: int, size: int, outputs: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(channels, 64, 3, padding=1), nn.GELU(), nn.Conv2d(64, 64, 3, padding=1), nn.GELU(),
        nn.Conv2d(64, 64, 3, padding=1, stride=2), nn.GELU(), nn.Flatten(),
        nn.Linear(64 * ((size + 1) // 2) ** 2, 128), nn.GELU(), nn.Linear(128, outputs))


def fit_probe(x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor, epochs: int,
              seed: int = 0) -> torch.Tensor:
    """R^2 per target column on (x_test, y_test) of the probe CNN trained on (x, y) (inputs and targets
    standardised on the training set; R^2 <= 0: no better than the training mean)."""
    torch.manual_seed(seed)
    mu, sd = x.mean((0, 2, 3), keepdim=True), x.std((0, 2, 3), keepdim=True).clamp_min(1e-6)
    ym, ys = y.mean(0), y.std(0).clamp_min(1e-8)
    x, x_test, target = (x - mu) / sd, (x_test - mu) / sd, (y - ym) / ys
    net = probe_net(x.shape[1], x.shape[-1], y.shape[1])
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for b in range(0, len(x), 128):
            j = perm[b:b + 128]
            loss = F.mse_loss(net(x[j]), target[j])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    with torch.no_grad():
        pred = net(x_test) * ys + ym
    return 1 - ((pred - y_test) ** 2).mean(0) / y_test.var(0)


@torch.no_grad()
def probe_inputs(vae, n: int, seed: int, reconstruct: bool = False
                 ) -> Tuple[Dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """n renders of random classes: the probe inputs, their colour features and (``reconstruct``) those of their
    reconstructions (else empty)."""
    inputs, feats, rec_feats = {"image": [], "f_hat": []}, [], []
    pn = vae.patch_nums[-1]
    for c in range(0, n, CHUNK):
        m = min(CHUNK, n - c)
        labels = torch.randint(0, NUM_CLASSES, (m,), generator=torch.Generator().manual_seed(seed * 1000 + c))
        img = render(labels, torch.Generator().manual_seed(seed * 1000 + c + 1))
        f_hat = vae.quantize.idx_to_fhat(vae.img_to_idx(img.mul(2).sub(1)))
        inputs["image"].append(F.adaptive_avg_pool2d(img, pn))
        inputs["f_hat"].append(f_hat)
        feats.append(colour_features(img))
        if reconstruct:
            rec_feats.append(colour_features(vae.fhat_to_img(f_hat).add(1).div(2).clamp(0, 1)))
    rec = torch.cat(rec_feats) if rec_feats else torch.empty(0, len(COLOUR_FEATURE_NAMES))
    return {k: torch.cat(v) for k, v in inputs.items()}, torch.cat(feats), rec


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=6000, help="training renders of the probes")
    p.add_argument("--heldout", type=int, default=1000, help="renders the R^2 is measured on")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default="", help="also write the figures here")
    args = p.parse_args(argv)
    if args.images < 100 or args.heldout < 10:
        p.error("--images must be >= 100 and --heldout >= 10")
    vae = var_fast.load(backend="reference", device="cpu").vae
    train_x, train_y, _ = probe_inputs(vae, args.images, 2 * args.seed + 1)
    test_x, test_y, test_rec = probe_inputs(vae, args.heldout, 2 * args.seed + 2, reconstruct=True)
    out = {"images": args.images, "heldout": args.heldout, "epochs": args.epochs, "r2": {},
           "decoder_correlation": {name: round(torch.corrcoef(torch.stack([test_y[:, i], test_rec[:, i]]))[0, 1].item(), 3)
                                   for i, name in enumerate(COLOUR_FEATURE_NAMES)}}
    for name in ("image", "f_hat"):
        r2 = fit_probe(train_x[name], train_y, test_x[name], test_y, args.epochs, args.seed)
        out["r2"][name] = {f: round(v, 3) for f, v in zip(COLOUR_FEATURE_NAMES, r2.tolist())}
        print(f"{name:6s} R^2 " + " ".join(f"{f} {v:+.2f}" for f, v in zip(COLOUR_FEATURE_NAMES, r2.tolist())), flush=True)
    print("decoder correlation " + " ".join(f"{f} {v:+.2f}" for f, v in out["decoder_correlation"].items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()

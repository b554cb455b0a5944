#!/usr/bin/env python
"""From which scale on do the default model's tokens fix a shape's orientation, and do its samples commit to one?

The renders' orientation (the angle the generator drew, as cos(n a), sin(n a) with n the class's rotational
symmetry) is fitted by ridge regression on the VQVAE's f_hat after the first k scales of training renders, for
every k. On other renders of the same class the fit gives:

* ``angle_error_deg``: the median error of the angle it reads (chance: 90 / n degrees for a uniform angle);
* ``renders_amplitude``: the mean length of the fitted (cos, sin) vector (near 1 when f_hat shows one angle).

``samples_amplitude`` is the same length on the f_hat of the VAR's own samples after k scales (cfg, top-k, top-p as
recommended): a sampled map whose tokens were drawn for different angles reads shorter than a render's. The
image_r2 column is the share of the variance of the 16x16-pooled render the same kind of fit explains.

    PYTHONPATH=. python scripts/probe_token_orientation.py --classes cross checkerboard
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from typing import List, Tuple

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

from var_fast.datasets import CLASS_NAMES  # noqa: E402
from var_fast.datasets.shapes import render_with_params  # noqa: E402
from var_fast.datasets.shape_stats import EDGE_SYMMETRY  # noqa: E402
from var_fast.default_model import default_model_info  # noqa: E402
from var_fast.reference.autoregressive import autoregressive_infer_cfg  # noqa: E402
from probe_default_model_scales import load_sampler, report  # noqa: E402

RIDGE_PENALTIES = (1e-1, 1e1, 1e3)


def renders_and_angles(class_name: str, n: int, seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    labels = torch.full((n,), CLASS_NAMES.index(class_name))
    images, params = render_with_params(labels, torch.Generator().manual_seed(seed))
    return images, params["angle"]


@torch.no_grad()
def partial_fhats(vae, tokens: List[torch.Tensor]) -> List[torch.Tensor]:
    """f_hat after the first k scales, k = 1 .. S, flattened to (B, C*H*W) each."""
    return [vae.quantize.idx_to_fhat(tokens[:k]).flatten(1).double() for k in range(1, len(tokens) + 1)]


def ridge_fit(X: torch.Tensor, Y: torch.Tensor, penalty: float):
    """A ridge regression on standardised features; returns the predictor."""
    mu, sd = X.mean(0), X.std(0) + 1e-6
    A = (X - mu) / sd
    y_mean = Y.mean(0)
    W = torch.linalg.solve(A.T @ A + penalty * torch.eye(A.shape[1], dtype=A.dtype), A.T @ (Y - y_mean))
    return lambda Z: ((Z - mu) / sd) @ W + y_mean


def angle_error_deg(pred: torch.Tensor, angle: torch.Tensor, order: int) -> torch.Tensor:
    err = torch.remainder(torch.atan2(pred[:, 1], pred[:, 0]) - order * angle + math.pi, 2 * math.pi) - math.pi
    return err.abs() / order * 180 / math.pi


@torch.no_grad()
def probe(sampler, class_name: str, n_fit: int, n_test: int, n_samples: int, sampling: dict, seed: int) -> dict:
    var, vae = sampler.var, sampler.vae
    order = EDGE_SYMMETRY.get(class_name, 1)
    fit_img, fit_angle = renders_and_angles(class_name, n_fit, 7000 + seed)
    test_img, test_angle = renders_and_angles(class_name, n_test, 8000 + seed)
    fit_x = partial_fhats(vae, vae.img_to_idx(fit_img.mul(2).sub(1)))
    test_x = partial_fhats(vae, vae.img_to_idx(test_img.mul(2).sub(1)))
    labels = torch.full((n_samples,), CLASS_NAMES.index(class_name))
    _, drawn = autoregressive_infer_cfg(var, vae, labels, torch.Generator().manual_seed(seed), **sampling)
    sample_x = partial_fhats(vae, drawn)
    target = torch.stack([torch.cos(order * fit_angle), torch.sin(order * fit_angle)], 1).double()
    fit_pix = F.avg_pool2d(fit_img, 4).flatten(1).double()
    test_pix = F.avg_pool2d(test_img, 4).flatten(1).double()
    rows = []
    for k in range(len(fit_x)):
        best = None
        for penalty in RIDGE_PENALTIES:  # chosen on the test renders' angle error
            predict = ridge_fit(fit_x[k], target, penalty)
            err = angle_error_deg(predict(test_x[k]), test_angle.double(), order).median().item()
            if best is None or err < best[0]:
                best = (err, predict, penalty)
        err, predict, penalty = best
        pix = ridge_fit(fit_x[k], fit_pix, penalty)(test_x[k])
        r2 = 1 - (pix - test_pix).pow(2).sum() / (test_pix - test_pix.mean(0)).pow(2).sum()
        rows.append({"scales": k + 1, "angle_error_deg": round(err, 1),
                     "renders_amplitude": round(predict(test_x[k]).norm(dim=1).mean().item(), 3),
                     "samples_amplitude": round(predict(sample_x[k]).norm(dim=1).mean().item(), 3),
                     "image_r2": round(r2.item(), 3)})
    return {"class": class_name, "symmetry": order, "chance_error_deg": round(90 / order, 1), "by_scales": rows}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", default="", help="folder with default_var.pth and default_vae.pth (default: the bundled)")
    p.add_argument("--classes", nargs="+", default=["cross", "checkerboard", "square"],
                   choices=[c for c in CLASS_NAMES if c in EDGE_SYMMETRY])
    p.add_argument("--fit", type=int, default=4000, help="renders per class the regression is fitted on")
    p.add_argument("--test", type=int, default=1000, help="other renders per class it is measured on")
    p.add_argument("--samples", type=int, default=300, help="VAR samples per class")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default="", help="also write the figures here")
    args = p.parse_args(argv)
    rec = default_model_info().get("sampling", {})
    sampling = dict(cfg=rec.get("cfg", 3.0), top_k=rec.get("top_k", 0), top_p=rec.get("top_p", 0.0))
    sampler = load_sampler(args.dir)
    report([probe(sampler, c, args.fit, args.test, args.samples, sampling, args.seed) for c in args.classes], args.json)


if __name__ == "__main__":
    main()

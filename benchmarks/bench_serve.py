"""What `var-fast serve`'s scale-by-scale preview costs: the bundled model's fast sampler for one request
of 1 and 4 images (the final decode and PNGs included, as the server does it), without a preview, with the
server's preview (the request's first image: f_hat area-averaged to each scale's grid, mapped to RGB by
``LatentPreview``, PNG-encoded) and, for comparison, with that grid decoded by the VQVAE instead.

    python -m pytest benchmarks/bench_serve.py --benchmark-only
"""
from __future__ import annotations

import pytest
import torch

import var_fast
from var_fast.native import extension as _ext


@pytest.fixture(scope="module")
def sampler():
    if _ext.extension() is None:
        pytest.skip("the serve batcher's fast path needs the native extension")
    s = var_fast.load(backend="fast", device="cpu")
    from var_fast.serve.preview import LatentPreview
    s.latent_preview = LatentPreview.fit(s)
    return s


def _one_request(sampler, n: int, preview: str):
    from var_fast.serve.batcher import png_bytes
    labels = torch.full((n,), 3, dtype=torch.long)
    S = len(sampler.patch_nums)

    def on_f_hat(si, f_hat):
        if si == S - 1:
            return
        if preview == "latent":  # the server's preview
            images = sampler.latent_preview(f_hat[:1], si)
        else:  # the VQVAE decoder on the scale's grid
            pn = sampler.patch_nums[si]
            small = torch.nn.functional.interpolate(f_hat[:1], size=(pn, pn), mode="area")
            images = sampler.vae.fhat_to_img(small).add(1).mul(0.5)
        [png_bytes(im) for im in images]

    f_hat, _ = sampler._fast_sampler().sample(labels, seed=0, cfg=3.0, on_f_hat=None if preview == "none" else on_f_hat)
    return [png_bytes(im) for im in sampler.vae.fhat_to_img(f_hat).add_(1).mul_(0.5)]


@pytest.mark.parametrize("n", [1, 4])
@pytest.mark.parametrize("preview", ["none", "latent", "decode"])
def test_preview_cost(benchmark, sampler, n, preview):
    benchmark.group = f"serve request, {n} image(s)"
    benchmark.pedantic(_one_request, args=(sampler, n, preview), rounds=5, warmup_rounds=1)

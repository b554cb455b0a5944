"""The fast sampler's loop alone (FastSampler.sample: 10 scales, no VQVAE decoding), var_d16 shapes with
random weights, one image with CFG, float32 (pytest-benchmark), and the launch counts of the same loop
when a GPU is present (benchmarks/gpu_check/launch_count.py).

    python -m pytest benchmarks/bench_fast_loop.py --benchmark-only
"""
from __future__ import annotations

import pytest
import torch

from var_fast.fast_sampler import FastSampler
from var_fast.models import VAR, VARConfig, VQVAE, VQVAEConfig

HAS_CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if HAS_CUDA else "cpu")


@pytest.fixture(scope="module")
def d16_sampler():
    torch.manual_seed(0)
    var_cfg = VARConfig.for_depth(16)
    with torch.device(DEVICE):
        var, vae = VAR(var_cfg), VQVAE(VQVAEConfig(patch_nums=var_cfg.patch_nums))
    with torch.no_grad():
        for module in (var, vae):
            for p in module.parameters():
                p.normal_(0, 0.02 if p.dim() > 1 else 0.01)
        vae.quantize.embedding.weight.normal_(0, 1)
    return FastSampler(var.eval(), vae.eval())


@pytest.mark.parametrize("batch", [1])
def test_fast_loop_latency(benchmark, d16_sampler, batch):
    labels = torch.arange(batch, device=DEVICE) % 1000

    def run():
        out = d16_sampler.sample(labels, seed=0, cfg=1.5, top_k=900, top_p=0.96)
        if HAS_CUDA:
            torch.cuda.synchronize()
        return out
    run()  # warm-up (and, on a GPU, graph capture)
    benchmark.pedantic(run, rounds=3, iterations=1)
    benchmark.extra_info.update(device=str(DEVICE), batch=batch, latency_s=benchmark.stats.stats.median)

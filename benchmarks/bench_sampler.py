"""Whole-sampler throughput: the reference implementation and var_fast, in the same process.

Random-weight models with the exact shapes of the published checkpoints (d16/d20/d24/d30 at 256 px,
d36 with shared AdaLN at 512 px, the ch160 v4096 z32 VQVAE), cfg=1.5, top_k=900, top_p=0.96,
VQVAE decoding included. Each case reports images/s, latency, peak memory (CUDA) and, on a GPU,
the fraction of the FLOP floor reached (FLOPs counted with torch.utils.flop_counter on one image).

    python -m pytest benchmarks/bench_sampler.py --benchmark-only                  # CPU: d16, batch 1
    VAR_FAST_BENCH_FULL=1 python -m pytest benchmarks/bench_sampler.py --benchmark-only   # every shape and batch
"""
from __future__ import annotations

import os

import pytest
import torch

import var_fast
from var_fast.models import PATCH_NUMS_512, VAR, VARConfig, VQVAE, VQVAEConfig

HAS_CUDA = torch.cuda.is_available()
FULL = os.environ.get("VAR_FAST_BENCH_FULL") == "1"
DEVICE = torch.device("cuda" if HAS_CUDA else "cpu")
DTYPE = torch.bfloat16 if HAS_CUDA else torch.float32

SHAPES = {
    "d16": dict(depth=16), "d20": dict(depth=20), "d24": dict(depth=24), "d30": dict(depth=30),
    "d36": dict(depth=36, shared_aln=True, patch_nums=PATCH_NUMS_512),
}
# dense bf16 tensor-core peak of the GPUs we report on (vendor figures), for the FLOP-floor fraction
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def _cases():
    if FULL or HAS_CUDA:
        return [(s, b) for s in SHAPES for b in (1, 16, 64)]
    return [("d16", 1)]


def _random_sampler(shape: str, backend: str) -> var_fast.Sampler:
    torch.manual_seed(0)
    var_cfg = VARConfig.for_depth(**SHAPES[shape])
    vae_cfg = VQVAEConfig(patch_nums=var_cfg.patch_nums)
    with torch.device(DEVICE):
        var, vae = VAR(var_cfg), VQVAE(vae_cfg)
    with torch.no_grad():
        for module in (var, vae):
            for name, p in module.named_parameters():
                p.normal_(0, 0.02 if p.dim() > 1 else 0.01)
        vae.quantize.embedding.weight.normal_(0, 1)
    return var_fast.Sampler(var.eval(), vae.eval(), device=DEVICE, dtype=DTYPE, backend=backend)


def _flops_per_image(sampler: var_fast.Sampler) -> float:
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with counter:
        sampler.sample([0], cfg=1.5, top_k=900, top_p=0.96, seed=0)
    return float(counter.get_total_flops())


def _peak_tflops():
    if not HAS_CUDA:
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


_samplers = {}


def _get(shape, backend):
    key = (shape, backend)
    if key not in _samplers:
        _samplers.clear()  # one model in memory at a time
        _samplers[key] = _random_sampler(shape, backend)
    return _samplers[key]


@pytest.mark.parametrize("backend", ["reference", "fast"])
@pytest.mark.parametrize("shape,batch", _cases())
def test_sampler_throughput(benchmark, shape, batch, backend):
    sampler = _get(shape, backend)
    labels = torch.arange(batch) % sampler.num_classes

    def run():
        out = sampler.sample(labels, cfg=1.5, top_k=900, top_p=0.96, seed=0)
        if HAS_CUDA:
            torch.cuda.synchronize()
        return out

    run()  # warm-up (kernel selection, caches)
    if HAS_CUDA:
        torch.cuda.reset_peak_memory_stats()
    benchmark.pedantic(run, rounds=3 if HAS_CUDA else 1, iterations=1)
    seconds = benchmark.stats.stats.median
    info = dict(device=str(DEVICE), dtype=str(DTYPE), images_per_s=batch / seconds, latency_s=seconds)
    if HAS_CUDA:
        info["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        peak = _peak_tflops()
        if peak:
            flops = _flops_per_image(sampler) * batch
            info["flop_floor_fraction"] = flops / (peak * 1e12) / seconds
    benchmark.extra_info.update(info)

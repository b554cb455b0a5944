"""Collaborative decoding (CoDe): a drafter/refiner pair against the drafter alone, in the same process.

Random-weight models with published shapes (256 px layout, ch160 v4096 z32 VQVAE), fast backend,
cfg=4, top_k=600, top_p=0.95, CoDe's temperature schedule. Timed: the transformer loop with sampling
and the quantizer updates, the VQVAE decode not (as CoDe's README times it).

    python -m pytest benchmarks/bench_collaborative.py --benchmark-only     # CPU: d6 + d2, batch 1
    (on a GPU: d30 + d16 at N = 8 and 6, batch 1 and 64)
"""
from __future__ import annotations

import pytest
import torch

import var_fast
from var_fast.models import VAR, VARConfig, VQVAE, VQVAEConfig
from var_fast.schedules import code_temperature

HAS_CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if HAS_CUDA else "cpu")
DTYPE = torch.bfloat16 if HAS_CUDA else torch.float32
DRAFTER, REFINER = (30, 16) if HAS_CUDA else (6, 2)  # CPU: small enough for minutes, not hours
BATCHES = (1, 64) if HAS_CUDA else (1,)


def _random(module: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.02 if p.dim() > 1 else 0.01)
    return module.eval()


@pytest.fixture(scope="module")
def pair_sampler():
    torch.manual_seed(0)
    with torch.device(DEVICE):
        drafter = _random(VAR(VARConfig.for_depth(DRAFTER)))
        refiner = _random(VAR(VARConfig.for_depth(REFINER)))
        vae = _random(VQVAE(VQVAEConfig()))
    with torch.no_grad():
        vae.quantize.embedding.weight.normal_(0, 1)
    alone = var_fast.Sampler(drafter, vae, device=DEVICE, dtype=DTYPE, backend="fast")
    pair = var_fast.Sampler(drafter, vae, device=DEVICE, dtype=DTYPE, backend="fast", refiner=refiner)
    return alone, pair


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("draft_steps", [None, 8, 6], ids=["drafter-alone", "N8", "N6"])
def test_collaborative_throughput(benchmark, pair_sampler, batch, draft_steps):
    alone, pair = pair_sampler
    sampler = alone if draft_steps is None else pair
    fast = sampler._fast_sampler()
    labels = torch.arange(batch, device=DEVICE) % 1000
    kw = dict(seed=0, cfg=4.0, top_k=600, top_p=0.95, temperature=code_temperature(10),
              **sampler._fast_pair(draft_steps))

    def run():
        out = fast.sample(labels, **kw)
        if HAS_CUDA:
            torch.cuda.synchronize()
        return out

    run()  # warm-up (CUDA graphs captured here)
    benchmark.pedantic(run, rounds=3 if not HAS_CUDA else 10, iterations=1)
    benchmark.extra_info.update(images=batch, drafter=f"d{DRAFTER}", refiner=f"d{REFINER}" if draft_steps else None,
                                draft_steps=draft_steps, device=str(DEVICE), dtype=str(DTYPE))

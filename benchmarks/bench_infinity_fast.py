"""Infinity's fast sampling loop (var_fast.infinity.fast_sampler.InfinityFastSampler) against the reference
loop (var_fast.infinity.infer_reference), the same random-weight models, float32, on the CPU (CUDA when present).

Models (Infinity-2B's layout: shared AdaLN, LayerNorm, GELU MLP, block chunks; random weights): "tiny" (4 blocks,
width 128, 2 heads, d = 8) and "small" (8 blocks, width 256, 4 heads, d = 16). Text: random 256-channel features
of 12-token prompts. One call = the loop of a 0.06M 1:1 image (7 scales up to 16x16), cfg 3 on the logits with
the learned unconditional embedding, run_infinity's top_k 900 / top_p 0.97, no VAE decoding (the same for
both). Before timing, both loops run greedy (top_k 1) once and must give the same bits.

    python -m pytest benchmarks/bench_infinity_fast.py --benchmark-only --benchmark-columns=min,median,max,rounds
"""
from __future__ import annotations

import pytest
import torch

from var_fast.infinity import BSQVAE, BSQVAEConfig, Infinity, InfinityConfig, TextCondition, infer_reference
from var_fast.infinity.fast_sampler import InfinityFastSampler
from var_fast.infinity.schedules import scale_schedule

HAS_CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if HAS_CUDA else "cpu")
MODELS = {
    "tiny": dict(depth=4, embed_dim=128, num_heads=2, mlp_hidden=512, d_vae=8, block_chunks=2),
    "small": dict(depth=8, embed_dim=256, num_heads=4, mlp_hidden=1024, d_vae=16, block_chunks=4),
}
BATCHES = (1, 4)
SCHEDULE = scale_schedule(1.0, "0.06M")
SETTINGS = dict(cfg_list=3.0, tau_list=1.0, top_k=900, top_p=0.97, cfg_insertion_layer=0)
TEXT_CHANNELS, PROMPT_TOKENS = 256, 12

_MODELS = {}


def _models(name):
    if name not in _MODELS:
        torch.manual_seed(0)
        cfg = InfinityConfig(text_channels=TEXT_CHANNELS, pool_heads=2, **MODELS[name])
        vae_cfg = BSQVAEConfig(codebook_dim=cfg.d_vae, ch=32, encoder_ch_mult=(1, 2), decoder_ch_mult=(1, 2),
                               num_res_blocks=1, encoder_down_levels=(0,), decoder_up_levels=(1,))
        with torch.device(DEVICE):
            model, vae = Infinity(cfg), BSQVAE(vae_cfg)
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0, 0.02 if p.dim() > 1 else 0.01)
            for b in model.all_blocks():
                b.sa.scale_mul_1H11.fill_(4.0).log_()
            model.cfg_uncond.normal_(0, 0.5)
            model.pos_start.normal_(0, 0.5)
        _MODELS[name] = (model.eval(), vae.eval(), InfinityFastSampler(model.eval(), vae.eval()))
    return _MODELS[name]


def _text(batch):
    g = torch.Generator().manual_seed(batch)
    return TextCondition(torch.randn(batch * PROMPT_TOKENS, TEXT_CHANNELS, generator=g).to(DEVICE),
                         [PROMPT_TOKENS] * batch)


_CHECKED = set()


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("impl", ["reference", "fast"])
def test_infinity_fast_loop(benchmark, impl, name, batch):
    model, vae, fast = _models(name)
    cond = _text(batch)
    if (name, batch) not in _CHECKED:  # the timings compare the same computation: greedy bits equal
        greedy = dict(SETTINGS, top_k=1, decode=False)
        ref, mine = infer_reference(model, vae, cond, SCHEDULE, seed=0, **greedy), fast.sample(cond, SCHEDULE, **greedy)
        for si, (a, b) in enumerate(zip(ref.bits, mine.bits)):
            assert torch.equal(a, b), f"{name} B={batch}: greedy bits differ at scale {si}"
        _CHECKED.add((name, batch))

    def run():
        if impl == "reference":
            out = infer_reference(model, vae, cond, SCHEDULE, seed=0, decode=False, **SETTINGS)
        else:
            out = fast.sample(cond, SCHEDULE, seed=0, decode=False, **SETTINGS)
        if HAS_CUDA:
            torch.cuda.synchronize()
        return out
    run()  # warm-up (and, on a GPU, graph capture)
    benchmark.extra_info.update(device=str(DEVICE), model=name, batch=batch, threads=torch.get_num_threads())
    benchmark.pedantic(run, rounds=3, iterations=1)

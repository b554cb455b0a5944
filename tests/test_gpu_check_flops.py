"""gpu-check's analytic FLOP counts against torch's FLOP counter on small models."""
import dataclasses

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.gpu_check.flops import decoder_flops, floor_fraction, image_flops, transformer_flops
from benchmarks.gpu_check.random_models import build, configs
from var_fast.models import VAR, VARConfig
from var_fast.models.blocks import KVCache


def counted(fn) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        fn()
    return counter.get_total_flops()


def test_decoder_flops_match_the_counter():
    _, vae = build("tiny", "cpu")
    cfg = vae.config
    f_hat = torch.randn(1, cfg.z_channels, cfg.patch_nums[-1], cfg.patch_nums[-1])
    assert decoder_flops(cfg) == counted(lambda: vae.fhat_to_img(f_hat))


@pytest.mark.parametrize("shared_aln", [False, True])
def test_transformer_flops_match_the_counter(shared_aln):
    var_cfg, _ = configs("tiny")
    var = VAR(dataclasses.replace(var_cfg, shared_aln=shared_aln)).eval()
    cfg = var.config
    cond = var.class_emb(torch.tensor([1, cfg.num_classes]))  # one image, CFG-doubled
    caches = [KVCache() for _ in var.blocks]

    def all_scales():
        for pn in cfg.patch_nums:
            var.forward_scale(torch.randn(2, pn * pn, cfg.embed_dim), cond, caches)

    with sdpa_kernel(SDPBackend.MATH):  # attention as matmuls the counter sees
        got = counted(all_scales)
    parts = transformer_flops(cfg)
    # the reference recomputes the AdaLN projections at every scale; the count has them once
    expected = parts["linear"] + parts["attention"] + parts["head"] + len(cfg.patch_nums) * parts["adaln"]
    assert got == expected


def test_published_d16_size():
    parts = transformer_flops(VARConfig.for_depth(16))
    # 16 blocks of 12 C^2 weights, 680 tokens, both CFG halves, 2 FLOPs per multiply-add
    assert parts["linear"] == 2 * 2 * 680 * 16 * 12 * 1024 ** 2
    assert image_flops(*configs("d16"))["total"] > parts["linear"]


def test_floor_fraction():
    assert floor_fraction(1e12, 1e15, 0.002) == pytest.approx(0.5)

"""scripts/probe_default_model_scales.py forces a render's own tokens into the first k scales: with every
scale forced the sample must be the VQVAE's reconstruction of the render, with none an ordinary sample."""
from __future__ import annotations


import pytest
import torch

import var_fast
from var_fast.datasets import CLASS_NAMES, render
from var_fast.reference.autoregressive import autoregressive_infer_cfg
from repo_scripts import load_script



@pytest.fixture(scope="module")
def probe_script():
    return load_script("probe_default_model_scales")


@pytest.fixture(scope="module")
def sampler():
    return var_fast.load(device="cpu", backend="reference")


@pytest.mark.parametrize("class_name", ["cross", "checkerboard"])
@torch.no_grad()
def test_forcing_every_scale_gives_the_reconstruction_and_none_a_plain_sample(probe_script, sampler, class_name):
    var, vae = sampler.var, sampler.vae
    labels = torch.full((3,), CLASS_NAMES.index(class_name))
    tokens = vae.img_to_idx(render(labels, torch.Generator().manual_seed(1)).mul(2).sub(1))
    S = len(var.patch_nums)
    kwargs = dict(cfg=3.0, top_p=0.8)
    f_hat, drawn = autoregressive_infer_cfg(var, vae, labels, torch.Generator().manual_seed(0),
                                            teacher_force=probe_script.forcing_first(tokens, S, vae.quantize.embedding),
                                            **kwargs)
    assert all(torch.equal(a, b) for a, b in zip(drawn, tokens))
    torch.testing.assert_close(vae.fhat_to_img(f_hat), vae.idx_to_img(tokens))
    _, forced_none = autoregressive_infer_cfg(var, vae, labels, torch.Generator().manual_seed(0),
                                              teacher_force=probe_script.forcing_first(tokens, 0, vae.quantize.embedding),
                                              **kwargs)
    _, plain = autoregressive_infer_cfg(var, vae, labels, torch.Generator().manual_seed(0), **kwargs)
    assert all(torch.equal(a, b) for a, b in zip(forced_none, plain))
    _, forced_two = autoregressive_infer_cfg(var, vae, labels, torch.Generator().manual_seed(0),
                                             teacher_force=probe_script.forcing_first(tokens, 2, vae.quantize.embedding),
                                             **kwargs)
    assert torch.equal(forced_two[0], tokens[0]) and torch.equal(forced_two[1], tokens[1])
    assert not all(torch.equal(a, b) for a, b in zip(forced_two[2:], tokens[2:]))


def test_probe_reports_every_k(probe_script, sampler):
    row = probe_script.probe(sampler, "square", 2, cfg=3.0, top_k=0, top_p=0.8, seed=0)
    assert row["class"] == "square" and 0 < row["renders"] <= 1
    assert [k for k in row if k.startswith("forced_")] == [f"forced_{k}" for k in range(len(sampler.var.patch_nums))]

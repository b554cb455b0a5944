"""scripts/probe_token_ambiguity.py: which jittered variants share a render's coarse tokens, and token maps mixed
from the two."""
from __future__ import annotations

import math

import pytest
import torch

import var_fast
from repo_scripts import load_script


@pytest.fixture(scope="module")
def probe_script():
    return load_script("probe_token_ambiguity")


def synthetic_tokens():
    """Two renders, three variants each, scales of 1, 4 and 9 tokens. Render 0: variant 1 shares scales 0 and 1,
    variant 2 only scale 0, variant 3 nothing. Render 1: no variant shares scale 0."""
    s0 = torch.tensor([[[5], [5], [5], [6]], [[7], [8], [9], [1]]])
    s1 = torch.zeros(2, 4, 4, dtype=torch.long)
    s1[0, 2, 0] = 3  # variant 2 of render 0 differs at scale 1
    s2 = torch.zeros(2, 4, 9, dtype=torch.long)
    s2[0, 1, :3] = 4  # variant 1 of render 0 differs in 3 of the 9 tokens of scale 2
    return [s0, s1, s2]


def test_shared_prefix_marks_the_variants_with_all_coarser_tokens_of_their_render(probe_script):
    tokens = synthetic_tokens()
    assert probe_script.shared_prefix(tokens, 1).tolist() == [[False, True, True, False], [False] * 4]
    assert probe_script.shared_prefix(tokens, 2).tolist() == [[False, True, False, False], [False] * 4]
    assert probe_script.differing_share(tokens, 2, probe_script.shared_prefix(tokens, 2)) == pytest.approx(3 / 9)
    assert probe_script.differing_share(tokens, 1, probe_script.shared_prefix(tokens, 1)) == pytest.approx(0.5 * 1 / 4)
    none = torch.zeros(2, 4, dtype=torch.bool)
    assert math.isnan(probe_script.differing_share(tokens, 2, none))


def test_mixed_tokens_take_scale_k_from_the_render_or_its_first_sharing_variant_and_keep_every_other_scale(
        probe_script):
    tokens = synthetic_tokens()
    rows, own, mixed = probe_script.mixed_tokens(tokens, 2, probe_script.shared_prefix(tokens, 2),
                                                 torch.Generator().manual_seed(0))
    assert rows.tolist() == [0]
    assert torch.equal(mixed[0], own[0]) and torch.equal(mixed[1], own[1])
    from_variant = mixed[2][0, :3] == 4
    assert from_variant.any() and not from_variant.all()  # 3 tokens, each from one of the two at random
    assert torch.equal(mixed[2][0, 3:], own[2][0, 3:])  # where the two agree, the mix is both


def test_probe_on_the_bundled_model_reports_every_scale(probe_script):
    sampler = var_fast.load(device="cpu", backend="reference")
    row = probe_script.probe(sampler, "square", 2, variants=3, jitter=0.2, seed=0,
                             sampling=dict(cfg=3.0, top_k=0, top_p=0.8))
    S = len(sampler.var.patch_nums)
    for k in range(1, S):
        assert f"shared_{k}" in row and f"differ_{k}" in row and 0 <= row[f"drawn_differ_{k}"] <= 1
        assert 0 < row[f"drawn_mixed_{k}"] <= 1.5
    # a fifth of the base jitter (0.2 px): most variants keep the 1x1 token, and mixing what they share changes
    # no edge
    assert row["shared_1"] > 0 and row["mixed_1"] == pytest.approx(row["recon_1"], abs=0.02)


def test_probe_refuses_an_empty_run(probe_script, capsys):
    with pytest.raises(SystemExit):
        probe_script.main(["--variants", "0"])
    assert "--variants must be >= 1" in capsys.readouterr().err


def test_mixed_with_takes_each_token_of_scale_k_from_either_map_and_leaves_the_other_scales(probe_script):
    own = [torch.zeros(2, 1, dtype=torch.long), torch.zeros(2, 16, dtype=torch.long)]
    mixed = probe_script.mixed_with(own, 1, torch.ones(2, 16, dtype=torch.long), torch.Generator().manual_seed(0))
    assert torch.equal(mixed[0], own[0]) and 0 < mixed[1].float().mean() < 1
    assert torch.equal(own[1], torch.zeros(2, 16, dtype=torch.long))  # the input is left as it was


@torch.no_grad()
def test_parallel_draws_are_each_scale_drawn_from_the_renders_tokens_and_chained_ones_are_ordinary_sampling(
        probe_script):
    from var_fast.datasets import CLASS_NAMES, render
    from var_fast.reference.autoregressive import autoregressive_infer_cfg
    from var_fast.reference.edit import TeacherForcing
    sampler = var_fast.load(device="cpu", backend="reference")
    var, vae = sampler.var, sampler.vae
    labels = torch.full((3,), CLASS_NAMES.index("cross"))
    own = vae.img_to_idx(render(labels, torch.Generator().manual_seed(2)).mul(2).sub(1))
    sampling = dict(cfg=3.0, top_k=0, top_p=0.8)
    chained, _ = probe_script.chained_and_parallel(var, vae, labels, own, 0, 7, sampling)
    _, plain = autoregressive_infer_cfg(var, vae, labels, torch.Generator().manual_seed(7), **sampling)
    assert all(torch.equal(a, b) for a, b in zip(chained, plain))  # k = 0: plain sampling
    k = 3
    chained, parallel = probe_script.chained_and_parallel(var, vae, labels, own, k, 7, sampling)
    assert len(parallel) == len(own) and all(torch.equal(parallel[si], own[si]) for si in range(k))
    # scale si of the parallel map is the VAR's draw of it with the render's scales 0..si-1 forced (the same
    # generator stream: every scale is drawn, forced or not)
    for si in (k, k + 2, len(own) - 1):
        keep = [torch.full_like(t, j < si, dtype=torch.bool) for j, t in enumerate(own)]
        _, forced = autoregressive_infer_cfg(var, vae, labels, torch.Generator().manual_seed(7), **sampling,
                                             teacher_force=TeacherForcing(own, keep, vae.quantize.embedding.weight))
        assert torch.equal(parallel[si], forced[si]), si
    assert torch.equal(parallel[k], chained[k])  # scale k: both after the render's scales 0..k-1
    assert not all(torch.equal(parallel[si], chained[si]) for si in range(k + 1, len(own)))

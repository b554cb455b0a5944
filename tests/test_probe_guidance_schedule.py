"""The reference loop's ``guidance`` (one t per scale in place of upstream's ramp) and
scripts/probe_guidance_schedule.py, which samples the default model with other guidance schedules:
upstream's own ramp given explicitly must draw upstream's tokens, another schedule other ones, and the
probe's "upstream" run must be the sampler's images."""
from __future__ import annotations

import pytest
import torch

import var_fast
from var_fast.datasets import balanced_labels
from var_fast.reference.autoregressive import autoregressive_infer_cfg
from var_fast.schedules import per_scale
from repo_scripts import load_script


@pytest.fixture(scope="module")
def probe_script():
    return load_script("probe_guidance_schedule")


@pytest.fixture(scope="module")
def sampler():
    return var_fast.load(device="cpu", backend="reference")


def _draw(sampler, labels, guidance, cfg=3.0):
    return autoregressive_infer_cfg(sampler.var, sampler.vae, labels, torch.Generator().manual_seed(5), cfg=cfg,
                                    top_p=0.8, guidance=guidance)


@torch.no_grad()
def test_upstream_ramp_given_explicitly_draws_upstreams_tokens(sampler):
    labels = torch.tensor([4, 9, 2])
    S = len(sampler.var.patch_nums)
    f_plain, plain = _draw(sampler, labels, None)
    f_ramp, ramp = _draw(sampler, labels, [3.0 * si / (S - 1) for si in range(S)])
    assert all(torch.equal(a, b) for a, b in zip(plain, ramp))
    assert torch.equal(f_plain, f_ramp)


@torch.no_grad()
def test_another_schedule_draws_other_tokens_from_the_first_scale_it_changes(sampler):
    labels = torch.tensor([4, 9, 2, 4])
    S = len(sampler.var.patch_nums)
    _, plain = _draw(sampler, labels, None)
    # upstream's t at the 1x1 scale (0), then a constant 3: the 1x1 draw is the same, the rest differ
    _, guided = _draw(sampler, labels, [0.0] + [3.0] * (S - 1))
    assert torch.equal(plain[0], guided[0])
    assert not all(torch.equal(a, b) for a, b in zip(plain[1:], guided[1:]))
    # a single number is one t for every scale: the 1x1 scale guided too
    _, constant = _draw(sampler, labels, 3.0)
    _, listed = _draw(sampler, labels, [3.0] * S)
    assert all(torch.equal(a, b) for a, b in zip(constant, listed))


@pytest.mark.parametrize("bad, message", [
    ([1.0, 2.0], "one value or one per scale"),
    ([0.0, -1.0, 0, 0, 0, 0, 0, 0], "guidance at scale 1"),
    (float("nan"), "guidance must be a finite number >= 0"),
    (True, "guidance must be"),
])
def test_bad_guidance_is_refused_naming_it(bad, message):
    with pytest.raises(ValueError, match=message):
        per_scale("guidance", bad, 8)


@pytest.mark.parametrize("name, expected", [
    ("upstream", None),
    ("constant", [3.0] * 4),
    ("from-2x2", [0.0, 3.0, 3.0, 3.0]),
    ("from-3x3", [0.0, 1.0, 3.0, 3.0]),
])
def test_named_schedules(probe_script, name, expected):
    assert probe_script.guidance_schedule(name, 3.0, 4) == expected


def test_unknown_schedule_is_refused(probe_script):
    with pytest.raises(ValueError, match="unknown guidance schedule 'linear'; known: upstream"):
        probe_script.guidance_schedule("linear", 3.0, 8)


@torch.no_grad()
def test_probe_upstream_draw_is_the_samplers_images(probe_script, sampler):
    labels = balanced_labels(1)
    mine = probe_script.draw(sampler, labels, 3, cfg=3.0, top_k=0, top_p=0.8, guidance=None)
    theirs = sampler.sample(labels, cfg=3.0, top_k=0, top_p=0.8, seed=3)
    torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-6)
    other = probe_script.draw(sampler, labels, 3, cfg=3.0, top_k=0, top_p=0.8,
                              guidance=probe_script.guidance_schedule("from-2x2", 3.0, len(sampler.var.patch_nums)))
    assert not torch.allclose(mine, other)


def test_probe_main_writes_one_row_per_schedule_and_seed(probe_script, tmp_path, capsys):
    out = tmp_path / "g.json"
    probe_script.main(["--schedule", "upstream", "--guidance", "0", "3", "3", "3", "3", "3", "3", "3",
                       "--per-class", "1", "--seed", "0", "1", "--json", str(out)])
    import json
    rows = json.loads(out.read_text())
    assert [(r["schedule"], r["seed"]) for r in rows] == [("upstream", 0), ("upstream", 1), ("explicit", 0),
                                                          ("explicit", 1)]
    assert rows[0]["guidance"] is None and rows[2]["guidance"] == [0, 3, 3, 3, 3, 3, 3, 3]
    assert all(0 <= r["class_accuracy"] <= 1 and "cross" in r["edge_concentration"] for r in rows)
    assert len(capsys.readouterr().out.strip().splitlines()) == 4


@pytest.mark.parametrize("guidance", [["1", "2"], ["0", "3", "3", "3", "3", "3", "3", "inf"]])
def test_probe_refuses_a_wrong_guidance_list(probe_script, guidance):
    with pytest.raises(SystemExit):
        probe_script.main(["--schedule", "upstream", "--guidance", *guidance, "--per-class", "1"])


@torch.no_grad()
def test_guided_coarse_scales_draw_crosses_in_one_pose(probe_script, sampler):
    """What the probe found: guidance from the 2x2 scale on draws nearly every cross upright, which the edge figure
    counts as straighter and orientation_agreement (tests/test_default_model.py guards it) catches."""
    from var_fast.datasets import CLASS_NAMES
    from var_fast.datasets.shape_stats import EDGE_SYMMETRY, orientation_agreement
    labels = torch.full((30,), CLASS_NAMES.index("cross"))
    order = torch.full((30,), EDGE_SYMMETRY["cross"])
    S = len(sampler.var.patch_nums)
    upstream = probe_script.draw(sampler, labels, 0, cfg=3.0, top_k=0, top_p=0.8, guidance=None)
    guided = probe_script.draw(sampler, labels, 0, cfg=3.0, top_k=0, top_p=0.8,
                               guidance=probe_script.guidance_schedule("from-2x2", 3.0, S))
    assert orientation_agreement(upstream, order) < 0.6 < orientation_agreement(guided, order)


def _small_var(sampler, seed: int = 0, **overrides):
    """A one-block VAR of the bundled model's scales, classes and codebook, randomly initialised."""
    import dataclasses
    from var_fast.models import VAR
    cfg = dataclasses.replace(sampler.var.config, depth=1, embed_dim=64, num_heads=1, mlp_hidden=128, **overrides)
    torch.manual_seed(seed)
    return VAR(cfg).eval()


@torch.no_grad()
def test_autoguidance_at_weight_zero_or_against_the_model_itself_is_upstreams_draw(probe_script, sampler):
    labels = torch.tensor([4, 9, 2])
    plain = probe_script.draw(sampler, labels, 5, cfg=3.0, top_k=0, top_p=0.8, guidance=None)
    small = _small_var(sampler)
    assert torch.equal(plain, probe_script.draw_autoguided(sampler, small, labels, 5, 3.0, 0, 0.8, weight=0.0))
    # good - bad is zero when the bad model is the model itself
    assert torch.equal(plain, probe_script.draw_autoguided(sampler, sampler.var, labels, 5, 3.0, 0, 0.8, weight=2.0))
    guided = probe_script.draw_autoguided(sampler, small, labels, 5, 3.0, 0, 0.8, weight=1.0)
    assert not torch.allclose(plain, guided)


def test_bad_var_of_another_model_is_refused(probe_script, sampler, tmp_path):
    path = tmp_path / "bad.pth"
    torch.save(_small_var(sampler, num_classes=7).state_dict(), path)
    with pytest.raises(ValueError, match="has 7 classes, the model 10"):
        probe_script.load_bad_var(str(path), sampler.var, sampler.vae)
    torch.save(_small_var(sampler).state_dict(), path)
    assert probe_script.load_bad_var(str(path), sampler.var, sampler.vae).depth == 1


@pytest.mark.parametrize("flags", [["--bad-var", "x.pth"], ["--autoguidance", "1"],
                                   ["--bad-var", "x.pth", "--autoguidance", "-1"]])
def test_autoguidance_flags_go_together(probe_script, flags):
    with pytest.raises(SystemExit):
        probe_script.main(["--schedule", "upstream", "--per-class", "1", *flags])

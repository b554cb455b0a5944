"""The default model's training script: its token cache can be extended and resumed without changing
a token, and its held-out loss is the teacher-forced loss of images it never trained on.

The bundled model was fine-tuned on 80,000 images after the first 20,000 were cached: the cached
tokens are kept and only the new batches encoded, so the extended set must equal a set encoded in one
go. A small random VQVAE (width 16) keeps this to seconds."""
from __future__ import annotations

import argparse
import math
import os

import pytest
import torch
import torch.nn.functional as F

from var_fast.datasets import NUM_CLASSES, shapes_batch
from var_fast.models import VAR, VARConfig, VQVAE, VQVAEConfig
from repo_scripts import load_script

PATCH_NUMS = (1, 2, 3, 4, 6, 8)


@pytest.fixture(scope="module")
def script():
    return load_script("train_default_model")


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    cfg = VQVAEConfig(vocab_size=64, z_channels=8, ch=32, ch_mult=(1, 1, 1, 1), num_res_blocks=1,
                      using_sa=False, using_mid_sa=False, patch_nums=PATCH_NUMS)
    return VQVAE(cfg).eval()


def assert_refused_before_any_work(script, flags, message: str, capsys, out_dir) -> None:
    """``main`` with ``flags`` exits with ``message`` on stderr and has written nothing into ``out_dir``
    (its --out-dir and --state-dir)."""
    with pytest.raises(SystemExit):
        script.main(["--out-dir", str(out_dir), "--state-dir", str(out_dir)] + list(flags))
    assert message in capsys.readouterr().err
    assert list(out_dir.iterdir()) == []


def args_for(images: int) -> argparse.Namespace:
    return argparse.Namespace(seed=3, patch_nums=PATCH_NUMS, var_images=images, image_size=64, vocab=64,
                              val_images=40)


def test_extended_token_cache_equals_one_encoding(script, vae):
    whole, whole_labels = script.encode_dataset(vae, args_for(750), torch.device("cpu"))
    first, first_labels = script.encode_dataset(vae, args_for(250), torch.device("cpu"))
    saves = []
    extended, extended_labels = script.encode_dataset(
        vae, args_for(750), torch.device("cpu"), cached={"tokens": first, "labels": first_labels},
        save=lambda **part: saves.append(part))
    assert len(whole_labels) == 750 and torch.equal(extended_labels, whole_labels)
    assert torch.equal(first_labels, whole_labels[:250])
    for si, pn in enumerate(PATCH_NUMS):
        assert whole[si].shape == (750, pn * pn)
        assert torch.equal(extended[si], whole[si]), f"scale {si} differs after extending the cache"
    hits = torch.stack([torch.bincount(t.flatten(), minlength=64).float() for t in whole]) / 3
    assert torch.equal(vae.quantize.ema_vocab_hit_SV, hits)
    assert saves == []  # partial saves come every 20 batches; 3 batches make none


def test_partial_saves_resume_where_they_stopped(script, vae, monkeypatch):
    """A save every 20 batches (here every batch, with the batch made small): resuming from the last
    partial save gives the same tokens as one uninterrupted encoding."""
    monkeypatch.setattr(script, "ENCODE_BATCH", 10)
    whole, whole_labels = script.encode_dataset(vae, args_for(420), torch.device("cpu"))
    saves = []
    script.encode_dataset(vae, args_for(420), torch.device("cpu"), save=lambda **part: saves.append(part))
    assert [len(s["labels"]) for s in saves] == [200, 400]
    resumed, resumed_labels = script.encode_dataset(vae, args_for(420), torch.device("cpu"), cached=saves[0])
    assert torch.equal(resumed_labels, whole_labels)
    assert all(torch.equal(a, b) for a, b in zip(resumed, whole))


def test_heldout_stream_is_not_the_training_stream(script, vae):
    train, train_labels = script.encode_dataset(vae, args_for(250), torch.device("cpu"))
    val, val_labels = script.encode_heldout(vae, args_for(250), torch.device("cpu"))
    assert len(val_labels) == 40 and [t.shape[1] for t in val] == [p * p for p in PATCH_NUMS]
    assert not torch.equal(val[-1], train[-1][:40])


def test_heldout_loss_is_teacher_forced_cross_entropy(script, vae):
    torch.manual_seed(1)
    var = VAR(VARConfig(depth=2, embed_dim=64, num_heads=2, mlp_hidden=128, num_classes=NUM_CLASSES,
                        shared_aln=False, attn_l2_norm=True, patch_nums=PATCH_NUMS, Cvae=8, vocab_size=64))
    script.init_var(var)
    var.train()
    tokens, labels = script.encode_heldout(vae, args_for(0), torch.device("cpu"))
    x = script.teacher_forcing_input(vae.quantize, tokens)
    target = torch.cat(tokens, dim=1)
    text = script.heldout_loss(var, x, target, labels, PATCH_NUMS)
    assert var.training  # restored
    var.eval()
    with torch.no_grad():
        logits = var(labels, x)
    want = F.cross_entropy(logits.transpose(1, 2), target, reduction="none")
    overall, per_scale = text.split(" (per scale ")
    assert math.isclose(float(overall), want.mean().item(), abs_tol=1e-4)
    starts = [0]
    for pn in PATCH_NUMS:
        starts.append(starts[-1] + pn * pn)
    got = [float(v) for v in per_scale.rstrip(")").split()]
    assert got == pytest.approx([want[:, a:b].mean().item() for a, b in zip(starts, starts[1:])], abs=1e-3)


def test_fine_tune_in_the_base_runs_state_dir_starts_afresh_and_resumes(script, vae, tmp_path, monkeypatch):
    """The recipe fine-tunes in the base run's --state-dir (to extend its token cache): the base run's
    saved VAR state must not be taken for the fine-tune's, while the fine-tune's own state resumes."""
    lines = []
    monkeypatch.setattr(script, "log", lines.append)
    tokens, labels = script.encode_dataset(vae, args_for(250), torch.device("cpu"))
    args = argparse.Namespace(seed=0, var_depth=1, var_width=64, patch_nums=PATCH_NUMS, cvae=8, vocab=64,
                              var_init="", var_lr=1e-3, state_dir=str(tmp_path), out_dir=str(tmp_path), resume=True,
                              var_steps=2, var_batch=4, label_dropout=0.1, save_every=1, log_every=1, val_every=1)
    script.train_var(vae, tokens, labels, args, torch.device("cpu"))
    base = torch.load(tmp_path / "var_state.pt", weights_only=True)
    assert base["step"] == 2 and base["var_init"] == ""
    init = tmp_path / "base_var.pth"
    (tmp_path / script.VAR_FILE).rename(init)

    lines.clear()
    fine = argparse.Namespace(**{**vars(args), "var_init": str(init), "var_steps": 3})
    script.train_var(vae, tokens, labels, fine, torch.device("cpu"))
    assert any("another run's (from scratch)" in line for line in lines), lines
    assert not any("resumed" in line for line in lines)
    assert torch.load(tmp_path / "var_state.pt", weights_only=True)["var_init"] == str(init)

    lines.clear()
    script.train_var(vae, tokens, labels, argparse.Namespace(**{**vars(fine), "var_steps": 4}), torch.device("cpu"))
    assert any("resumed from" in line and "at step 3" in line for line in lines), lines


def test_weight_average_is_the_mean_of_the_chosen_steps_and_survives_a_resume(script, vae, tmp_path, monkeypatch):
    """--var-average-from 2 --var-average-every 1 over 4 steps: the output is the float64 mean of the weights
    after steps 2, 3 and 4 (the last weights go to default_var_last.pth), also when the run stops after
    step 3 and resumes."""
    lines, saved = [], {}
    monkeypatch.setattr(script, "log", lines.append)
    save_state = script.save_state

    def recording_save_state(path, **state):
        saved[state["step"]] = {k: v.clone() for k, v in state["var"].items()}
        save_state(path, **state)

    monkeypatch.setattr(script, "save_state", recording_save_state)
    tokens, labels = script.encode_dataset(vae, args_for(250), torch.device("cpu"))
    args = argparse.Namespace(seed=0, var_depth=1, var_width=64, patch_nums=PATCH_NUMS, cvae=8, vocab=64,
                              var_init="", var_lr=1e-3, state_dir=str(tmp_path / "a"), out_dir=str(tmp_path / "a"),
                              resume=True, var_steps=4, var_batch=4, label_dropout=0.1, save_every=1, log_every=1,
                              val_every=1, var_average_from=2, var_average_every=1)
    (tmp_path / "a").mkdir()
    averaged = {k: v.clone() for k, v in script.train_var(vae, tokens, labels, args, torch.device("cpu")).state_dict().items()}
    assert sorted(saved) == [1, 2, 3, 4]
    for k, v in averaged.items():
        if v.is_floating_point():
            want = ((saved[2][k].double() + saved[3][k].double() + saved[4][k].double()) / 3).float()
            assert torch.equal(v, want), k
    assert not torch.equal(averaged["head.weight"], saved[4]["head.weight"])  # the average is not the last step
    last = torch.load(tmp_path / "a" / script.VAR_LAST_FILE, weights_only=True)
    assert all(torch.equal(last[k], saved[4][k]) for k in last)
    assert any("mean of the weights after steps 2, 3, ..., 4 (3 sets" in line for line in lines), lines

    class Stop(Exception):
        pass

    def stop_after_step_3(path, **state):
        save_state(path, **state)
        if state["step"] == 3:
            raise Stop

    (tmp_path / "b").mkdir()
    resumed = argparse.Namespace(**{**vars(args), "state_dir": str(tmp_path / "b"), "out_dir": str(tmp_path / "b")})
    monkeypatch.setattr(script, "save_state", stop_after_step_3)
    with pytest.raises(Stop):
        script.train_var(vae, tokens, labels, resumed, torch.device("cpu"))
    again = script.train_var(vae, tokens, labels, resumed, torch.device("cpu")).state_dict()
    assert all(torch.equal(again[k], averaged[k]) for k in averaged)


@pytest.mark.parametrize("flags, message", [
    (["--var-steps", "100", "--var-average-from", "101"], "must be a step in 0..--var-steps (100)"),
    (["--var-steps", "100", "--var-average-from", "50", "--var-average-every", "0"], "must be >= 1"),
    (["--var-steps", "130", "--var-average-from", "101", "--var-average-every", "100"], "nothing to average"),
])
def test_weight_average_flags_are_checked_before_any_work(script, flags, message, capsys, tmp_path):
    assert_refused_before_any_work(script, flags, message, capsys, tmp_path)


def test_token_loss_tokens_is_the_plain_mean_and_scales_weights_every_scale_alike(script):
    torch.manual_seed(0)
    L = sum(pn * pn for pn in PATCH_NUMS)
    logits, target = torch.randn(3, L, 64), torch.randint(64, (3, L))
    plain = F.cross_entropy(logits.reshape(-1, 64), target.reshape(-1))
    assert script.loss_token_weights(PATCH_NUMS, "tokens") is None  # the reference's loss, bit for bit
    assert torch.equal(script.token_loss(logits, target, None), plain)
    ce = F.cross_entropy(logits.transpose(1, 2), target, reduction="none")
    starts = [0]
    for pn in PATCH_NUMS:
        starts.append(starts[-1] + pn * pn)
    per_scale = torch.stack([ce[:, a:b].mean() for a, b in zip(starts, starts[1:])])
    scales = script.loss_token_weights(PATCH_NUMS, "scales")
    assert scales.sum().item() == pytest.approx(1.0)
    torch.testing.assert_close(script.token_loss(logits, target, scales), per_scale.mean())
    assert not torch.allclose(per_scale.mean(), plain)
    with pytest.raises(ValueError, match="'tokens' or 'scales'"):
        script.loss_token_weights(PATCH_NUMS, "pixels")


def tiny_var(depth: int) -> VAR:
    return VAR(VARConfig(depth=depth, embed_dim=64, num_heads=1, mlp_hidden=256, num_classes=NUM_CLASSES,
                         shared_aln=False, attn_l2_norm=True, patch_nums=PATCH_NUMS, Cvae=8, vocab_size=64))


@pytest.mark.parametrize("old_depth, depth, placed", [(2, 5, [0, 4]), (3, 5, [0, 2, 4]), (3, 3, [0, 1, 2]),
                                                      (1, 3, [0])])
def test_deepened_var_computes_what_the_shallower_one_did(script, old_depth, depth, placed):
    """--var-deepen: the old blocks keep their order and weights, spread evenly; the new ones (fresh
    weights, zero AdaLN gates) add nothing, so the deeper VAR's logits are the shallower one's."""
    torch.manual_seed(0)
    small, big = tiny_var(old_depth), tiny_var(depth)
    script.init_var(small)
    script.init_var(big)
    with torch.no_grad():  # gates far from zero, so an old block that was dropped or moved would show
        for block in small.blocks:
            block.ada_lin[-1].weight.normal_(0, 0.1)
            block.ada_lin[-1].bias.normal_(0, 0.1)
    sd, where = script.deepened_state_dict(small.state_dict(), big)
    assert where == placed
    big.load_state_dict(sd, strict=True)
    for i, b in enumerate(placed):
        assert torch.equal(big.blocks[b].attn.mat_qkv.weight, small.blocks[i].attn.mat_qkv.weight)
    new = [b for b in range(depth) if b not in placed]
    for b in new:
        gates = big.blocks[b].ada_lin[-1]
        assert not gates.weight[:2 * 64].any() and not gates.bias[:2 * 64].any()
        assert gates.weight[2 * 64:].any() and big.blocks[b].ffn.fc1.weight.any()  # the rest is trainable
    small.eval(), big.eval()
    x, label = torch.randn(3, small.L - 1, 8), torch.tensor([0, 4, NUM_CLASSES])
    with torch.no_grad():
        assert torch.equal(big(label, x), small(label, x))
    # and the new blocks do learn: one step moves their gates off zero
    if new:
        big.train()
        F.cross_entropy(big(label, x).transpose(1, 2), torch.randint(64, (3, small.L))).backward()
        assert big.blocks[new[0]].ada_lin[-1].weight.grad[:2 * 64].abs().sum() > 0


def test_deepen_refuses_a_deeper_checkpoint(script):
    with pytest.raises(ValueError, match="has 3 blocks, the VAR 2"):
        script.deepened_state_dict(tiny_var(3).state_dict(), tiny_var(2))


@pytest.mark.parametrize("flags, message", [
    (["--var-deepen"], "give --var-init"),
    (["--var-deepen", "--var-depth", "2", "--var-init", "INIT"], "has 3 blocks, more than --var-depth 2"),
    (["--var-rescale"], "give --var-init"),
    (["--var-rescale", "--var-init", "INIT", "--patch-nums", "1", "2", "4"], "must increase and start and end"),
    (["--var-rescale", "--var-init", "INIT", "--patch-nums", "1", "3", "2", "8"], "must increase and start and end"),
])
def test_deepen_and_rescale_flags_are_checked_before_any_work(script, flags, message, capsys, tmp_path):
    init = tmp_path / "init.pth"
    torch.save(tiny_var(3).state_dict(), init)
    out = tmp_path / "out"
    out.mkdir()
    assert_refused_before_any_work(script, [str(init) if f == "INIT" else f for f in flags], message, capsys, out)


def test_a_deeper_run_from_the_same_weights_does_not_resume_the_shallower_ones_state(script, vae, tmp_path,
                                                                                      monkeypatch):
    """Two runs from the same --var-init in one --state-dir (a plain fine-tune, then a --var-deepen one):
    the second must start afresh, not load the first's state into a model of another depth; states saved
    before the run identity was (no "run" key) are judged by their weights."""
    lines = []
    monkeypatch.setattr(script, "log", lines.append)
    tokens, labels = script.encode_dataset(vae, args_for(250), torch.device("cpu"))
    init = tmp_path / "init.pth"
    torch.save(tiny_var(1).state_dict(), init)
    args = argparse.Namespace(seed=0, var_depth=1, var_width=64, patch_nums=PATCH_NUMS, cvae=8, vocab=64,
                              var_init=str(init), var_lr=1e-3, state_dir=str(tmp_path), out_dir=str(tmp_path),
                              resume=True, var_steps=2, var_batch=4, label_dropout=0.1, save_every=1, log_every=1,
                              val_every=1)
    script.train_var(vae, tokens, labels, args, torch.device("cpu"))
    state = torch.load(tmp_path / "var_state.pt", weights_only=True)
    assert state["run"] == {"var_depth": 1, "var_width": 64, "var_deepen": False, "var_scale_weighting": "tokens",
                            "var_class_weights": None, "var_self_correction": 0.0,
                            "var_self_correction_scales": None, "var_rescale": False, "patch_nums": list(PATCH_NUMS)}
    del state["run"]  # as a state from before the identity was saved
    torch.save(state, tmp_path / "var_state.pt")

    lines.clear()
    deeper = argparse.Namespace(**{**vars(args), "var_depth": 2, "var_deepen": True, "var_steps": 3})
    assert len(script.train_var(vae, tokens, labels, deeper, torch.device("cpu")).blocks) == 2
    assert any("another run's from the same weights" in line and "'var_depth': (1, 2)" in line for line in lines), lines
    assert not any("resumed" in line for line in lines)

    lines.clear()  # the deeper run's own state resumes
    script.train_var(vae, tokens, labels, argparse.Namespace(**{**vars(deeper), "var_steps": 4}), torch.device("cpu"))
    assert any("resumed from" in line and "at step 3" in line for line in lines), lines


def tiny_var_with(patch_nums, depth: int = 1) -> VAR:
    return VAR(VARConfig(depth=depth, embed_dim=64, num_heads=1, mlp_hidden=256, num_classes=NUM_CLASSES,
                         shared_aln=False, attn_l2_norm=True, patch_nums=tuple(patch_nums), Cvae=8, vocab_size=64))


def scale_rows(pos: torch.Tensor, patch_nums, si: int) -> torch.Tensor:
    start = sum(p * p for p in patch_nums[:si])
    return pos[0, start:start + patch_nums[si] ** 2]


@pytest.mark.parametrize("new_pns", [(1, 2, 3, 4, 5, 6, 7, 8), (1, 2, 3, 4, 5, 6, 8), (1, 2, 4, 8), PATCH_NUMS])
def test_rescaled_var_keeps_every_weight_of_the_old_scales(script, new_pns):
    """--var-rescale: a scale both schedules have keeps its position rows and level embedding; a new one gets the
    next larger old scale's position grid resized and its neighbours' level embeddings interpolated; every
    other weight is copied, the masks are the new VAR's; the result loads strictly and runs."""
    torch.manual_seed(0)
    old, new = tiny_var_with(PATCH_NUMS), tiny_var_with(new_pns)
    with torch.no_grad():
        old.pos_1LC.normal_()
        old.lvl_embed.weight.normal_()
    sd, origin = script.rescaled_state_dict(old.state_dict(), PATCH_NUMS, new)
    new.load_state_dict(sd, strict=True)
    assert sorted(origin) == list(range(len(new_pns)))
    for j, pn in enumerate(new_pns):
        if pn in PATCH_NUMS:
            i = PATCH_NUMS.index(pn)
            assert origin[j] == f"old scale {i} ({pn}x{pn})"
            assert torch.equal(scale_rows(new.pos_1LC, new_pns, j), scale_rows(old.pos_1LC, PATCH_NUMS, i))
            assert torch.equal(new.lvl_embed.weight[j], old.lvl_embed.weight[i])
        else:
            hi = next(i for i, q in enumerate(PATCH_NUMS) if q > pn)
            lo = hi - 1
            assert origin[j].startswith(f"new: positions of old scale {hi}")
            grid = scale_rows(old.pos_1LC, PATCH_NUMS, hi).T.reshape(1, 64, PATCH_NUMS[hi], PATCH_NUMS[hi])
            want = F.interpolate(grid, size=(pn, pn), mode="bilinear", align_corners=False).reshape(64, -1).T
            assert torch.allclose(scale_rows(new.pos_1LC, new_pns, j), want)
            t = (pn - PATCH_NUMS[lo]) / (PATCH_NUMS[hi] - PATCH_NUMS[lo])
            assert torch.allclose(new.lvl_embed.weight[j],
                                  (1 - t) * old.lvl_embed.weight[lo] + t * old.lvl_embed.weight[hi])
    assert torch.equal(new.blocks[0].attn.mat_qkv.weight, old.blocks[0].attn.mat_qkv.weight)
    assert torch.equal(new.head.weight, old.head.weight) and torch.equal(new.class_emb.weight, old.class_emb.weight)
    assert new.attn_bias_for_masking.shape[-1] == new.L == sum(p * p for p in new_pns)
    new.eval()
    with torch.no_grad():
        logits = new(torch.tensor([0, NUM_CLASSES]), torch.randn(2, new.L - 1, 8))
    assert logits.shape == (2, new.L, 64) and torch.isfinite(logits).all()
    if new_pns == PATCH_NUMS:  # the same schedule: the same model
        assert all(torch.equal(v, old.state_dict()[k]) for k, v in new.state_dict().items())


@pytest.mark.parametrize("new_pns, message", [((2, 3, 4, 6, 8), "first scale must stay 1x1"),
                                              ((1, 2, 3, 4, 6), "end at the old last scale 8")])
def test_rescale_refuses_another_first_or_last_scale(script, new_pns, message):
    with pytest.raises(ValueError, match=message):
        script.rescaled_state_dict(tiny_var_with(PATCH_NUMS).state_dict(), PATCH_NUMS, tiny_var_with(new_pns))


def test_token_cache_of_other_scales_is_not_reused(script):
    """The cache's scales are read off its token maps; main re-encodes when they are not --patch-nums."""
    st = {"tokens": [torch.zeros(5, pn * pn, dtype=torch.long) for pn in PATCH_NUMS]}
    assert script.cached_patch_nums(st) == list(PATCH_NUMS)
    st = {"tokens": [torch.zeros(5, pn * pn, dtype=torch.long) for pn in (1, 2, 3, 4, 5, 6, 8)]}
    assert script.cached_patch_nums(st) != list(PATCH_NUMS)


def test_class_weights_draw_each_class_as_often_as_its_weight_says(script):
    labels = torch.arange(NUM_CLASSES).repeat(100)  # every class 100 times
    assert script.class_sampling_weights(labels, None) is None  # uniform: the reference's torch.randint
    weights = [1.0] * NUM_CLASSES
    weights[4], weights[9] = 2.0, 4.0
    image_weights = script.class_sampling_weights(labels, weights)
    assert image_weights.tolist() == [weights[k] for k in labels.tolist()]
    picks = torch.multinomial(image_weights, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    share = torch.bincount(labels[picks], minlength=NUM_CLASSES).double() / len(picks)
    torch.testing.assert_close(share, torch.tensor(weights, dtype=torch.float64) / sum(weights), atol=3e-3, rtol=0)


@pytest.mark.parametrize("weights, message", [
    ([1.0] * (NUM_CLASSES - 1), f"{NUM_CLASSES} finite numbers"),
    ([1.0] * (NUM_CLASSES - 1) + [-1.0], ">= 0"),
    ([0.0] * NUM_CLASSES, "not all zero"),
    ([1.0] * (NUM_CLASSES - 1) + [math.nan], "finite"),
])
def test_class_weights_refuse_what_is_not_a_weight_per_class(script, weights, message):
    with pytest.raises(ValueError, match=message):
        script.class_sampling_weights(torch.arange(NUM_CLASSES), weights)


def test_class_weights_of_classes_absent_from_the_set_are_refused(script):
    weights = [0.0] * NUM_CLASSES
    weights[3] = 1.0
    with pytest.raises(ValueError, match="every training image weight 0"):
        script.class_sampling_weights(torch.tensor([0, 1, 2]), weights)


@pytest.mark.parametrize("values, message", [
    (["1"] * (NUM_CLASSES - 1) + ["-1"], ">= 0"),
    (["0"] * NUM_CLASSES, "not all zero"),
    (["1"] * (NUM_CLASSES - 1) + ["inf"], "finite"),
    (["1"] * (NUM_CLASSES - 1), "expected 10 arguments"),
])
def test_class_weight_flags_are_checked_before_any_work(script, values, message, capsys, tmp_path):
    assert_refused_before_any_work(script, ["--var-class-weights"] + values, message, capsys, tmp_path)


def test_a_class_weighted_run_trains_on_the_weighted_classes_and_is_its_own_run(script, vae, tmp_path, monkeypatch):
    """With every weight but one zero, every training batch holds that class only (or the dropped label);
    the weights are part of the saved run identity, so a run with other weights does not resume it."""
    lines, seen = [], []
    monkeypatch.setattr(script, "log", lines.append)

    class RecordingVAR(VAR):
        def forward(self, label_B, x_BLCv):
            seen.append(label_B.clone())
            return super().forward(label_B, x_BLCv)

    monkeypatch.setattr(script, "VAR", RecordingVAR)
    tokens, labels = script.encode_dataset(vae, args_for(250), torch.device("cpu"))
    weights = [0.0] * NUM_CLASSES
    weights[7] = 1.0
    args = argparse.Namespace(seed=0, var_depth=1, var_width=64, patch_nums=PATCH_NUMS, cvae=8, vocab=64,
                              var_init="", var_lr=1e-3, state_dir=str(tmp_path), out_dir=str(tmp_path), resume=True,
                              var_steps=3, var_batch=16, label_dropout=0.1, save_every=1, log_every=1, val_every=1,
                              var_class_weights=weights)
    script.train_var(vae, tokens, labels, args, torch.device("cpu"))
    fed = torch.cat(seen)
    assert set(fed.tolist()) <= {7, NUM_CLASSES} and (fed == 7).any()
    state = torch.load(tmp_path / "var_state.pt", weights_only=True)
    assert state["run"]["var_class_weights"] == weights

    lines.clear()
    uniform = argparse.Namespace(**{**vars(args), "var_class_weights": None, "var_steps": 4})
    script.train_var(vae, tokens, labels, uniform, torch.device("cpu"))
    assert any("another run's from the same weights" in line and "var_class_weights" in line for line in lines), lines

    lines.clear()  # a state saved before the class weights were part of the identity reads as uniform
    state = torch.load(tmp_path / "var_state.pt", weights_only=True)
    del state["run"]["var_class_weights"]
    torch.save(state, tmp_path / "var_state.pt")
    script.train_var(vae, tokens, labels, argparse.Namespace(**{**vars(uniform), "var_steps": 5}), torch.device("cpu"))
    assert any("resumed from" in line and "at step 4" in line for line in lines), lines


class ConstantSampleVAR(torch.nn.Module):
    """Logits putting all mass on one code: the self-correction's samples are that code, always."""

    def __init__(self, code: int, vocab: int):
        super().__init__()
        self.code, self.vocab = code, vocab

    def forward(self, label_B, x_BLCv):
        L = x_BLCv.shape[1] + 1  # the first scale's single token is not part of the input
        logits = torch.full((label_B.shape[0], L, self.vocab), -1e4)
        logits[..., self.code] = 0.0
        return logits


def requantized_targets(quant, inputs, true):
    """Plain reference: from the first scale whose input differs from its target on, each scale's target is
    the nearest code of the area-downsampled rest of the true tokens' f_hat after the inputs so far."""
    pns, S, C, HW = quant.v_patch_nums, len(quant.v_patch_nums), quant.Cvae, quant.v_patch_nums[-1]
    f_goal = quant.idx_to_fhat(true)
    targets, f_hat, corrupted = [true[0]], torch.zeros_like(f_goal), False
    for si in range(1, S):
        h = quant.embedding(inputs[si - 1]).transpose(1, 2).reshape(1, C, pns[si - 1], pns[si - 1])
        f_hat = f_hat + quant.phi(si - 1, S)(F.interpolate(h, size=(HW, HW), mode="bicubic"))
        corrupted = corrupted or not torch.equal(inputs[si - 1], targets[si - 1])
        rest = f_goal - f_hat
        if si < S - 1:
            rest = F.interpolate(rest, size=(pns[si], pns[si]), mode="area")
        requant = quant.nearest_code(rest.permute(0, 2, 3, 1).reshape(-1, C)).view(1, -1)
        targets.append(requant if corrupted else true[si])
    return targets


def test_self_correction_off_is_plain_teacher_forcing(script, vae):
    tokens, labels = script.encode_dataset(vae, args_for(24), torch.device("cpu"))
    x = script.teacher_forcing_input(vae.quantize, tokens)
    target = torch.cat(tokens, dim=1)
    x2, target2 = script.self_correction_batch(vae.quantize, ConstantSampleVAR(5, 64), labels, x, target, 0.0,
                                               torch.Generator().manual_seed(0))
    assert torch.equal(x2, x) and torch.equal(target2, target)


def test_self_correction_replaces_tokens_by_samples_and_requantizes_the_later_targets(script, vae):
    """p_max 1: every non-final scale's fed tokens are the targets or the VAR's sample (code 5 here); an
    image whose fed tokens all equal its targets keeps its true tokens; the others' targets from their
    first changed scale on are the re-quantized rest (the plain reference above); the input is the
    teacher-forcing input of the tokens fed."""
    quant, lens = vae.quantize, [pn * pn for pn in PATCH_NUMS]
    tokens, labels = script.encode_dataset(vae, args_for(48), torch.device("cpu"))
    x = script.teacher_forcing_input(quant, tokens)
    target = torch.cat(tokens, dim=1)
    x2, target2, fed = script.self_correction_batch(quant, ConstantSampleVAR(5, 64), labels, x, target, 1.0,
                                                    torch.Generator().manual_seed(1), return_fed=True)
    new_targets = target2.split(lens, dim=1)
    assert len(fed) == len(PATCH_NUMS) - 1
    assert torch.equal(x2, script.teacher_forcing_input(quant, fed + [new_targets[-1]]))
    requantized_images = 0
    for b in range(len(labels)):
        true = [t[b:b + 1] for t in tokens]
        fed_b = [f[b:b + 1] for f in fed]
        targets_b = [t[b:b + 1] for t in new_targets]
        for f, t in zip(fed_b, targets_b):
            assert ((f == t) | (f == 5)).all()
        assert all(torch.equal(a, r) for a, r in zip(targets_b, requantized_targets(quant, fed_b, true)))
        requantized_images += not torch.equal(target2[b], target[b])
    assert requantized_images > 0  # the case is not vacuous: some images were corrupted and re-targeted


def test_self_correction_limited_to_some_scales_replaces_tokens_only_there(script, vae):
    """With ``scales``, only those scales' fed tokens may differ from the targets; the later targets of a
    corrupted image are still the re-quantized rest."""
    quant, lens = vae.quantize, [pn * pn for pn in PATCH_NUMS]
    tokens, labels = script.encode_dataset(vae, args_for(48), torch.device("cpu"))
    x = script.teacher_forcing_input(quant, tokens)
    target = torch.cat(tokens, dim=1)
    only = PATCH_NUMS[1]
    _, target2, fed = script.self_correction_batch(quant, ConstantSampleVAR(5, 64), labels, x, target, 1.0,
                                                   torch.Generator().manual_seed(1), return_fed=True, scales=[only])
    new_targets = target2.split(lens, dim=1)
    changed = 0
    for si, pn in enumerate(PATCH_NUMS[:-1]):
        if pn == only:
            assert ((fed[si] == new_targets[si]) | (fed[si] == 5)).all()
            changed += int((fed[si] != new_targets[si]).sum())
        else:
            assert torch.equal(fed[si], new_targets[si])
            if si < PATCH_NUMS.index(only):
                assert torch.equal(fed[si], tokens[si])  # before the corrupted scale: the true tokens
    assert changed > 0
    for b in range(len(labels)):
        fed_b = [f[b:b + 1] for f in fed]
        true = [t[b:b + 1] for t in tokens]
        targets_b = [t[b:b + 1] for t in new_targets]
        assert all(torch.equal(a, r) for a, r in zip(targets_b, requantized_targets(quant, fed_b, true)))


def test_self_correction_flag_is_checked_before_any_work(script, capsys, tmp_path):
    assert_refused_before_any_work(script, ["--var-self-correction", "1.5"],
                                   "--var-self-correction must be a share in [0, 1]", capsys, tmp_path)
    assert_refused_before_any_work(script, ["--var-self-correction-scales", "3"],
                                   "--var-self-correction-scales needs --var-self-correction", capsys, tmp_path)
    assert_refused_before_any_work(script, ["--var-self-correction", "0.5", "--var-self-correction-scales", "8"],
                                   "--var-self-correction-scales: [8] not a non-final scale", capsys, tmp_path)
    assert_refused_before_any_work(script, ["--var-self-correction", "0.5", "--var-self-correction-scales", "5"],
                                   "--var-self-correction-scales: [5] not a non-final scale", capsys, tmp_path)


def test_a_self_correcting_run_is_its_own_run(script, vae, tmp_path, monkeypatch):
    """The self-correction share and scales are part of the saved run identity; a state saved before they
    were reads as 0 and every scale."""
    lines = []
    monkeypatch.setattr(script, "log", lines.append)
    tokens, labels = script.encode_dataset(vae, args_for(100), torch.device("cpu"))
    args = argparse.Namespace(seed=0, var_depth=1, var_width=64, patch_nums=PATCH_NUMS, cvae=8, vocab=64,
                              var_init="", var_lr=1e-3, state_dir=str(tmp_path), out_dir=str(tmp_path), resume=True,
                              var_steps=2, var_batch=8, label_dropout=0.1, save_every=1, log_every=1, val_every=1,
                              var_self_correction=0.5)
    script.train_var(vae, tokens, labels, args, torch.device("cpu"))
    state = torch.load(tmp_path / "var_state.pt", weights_only=True)
    assert state["run"]["var_self_correction"] == 0.5
    assert state["run"]["var_self_correction_scales"] is None

    lines.clear()
    limited = argparse.Namespace(**{**vars(args), "var_self_correction_scales": [PATCH_NUMS[1]], "var_steps": 3})
    script.train_var(vae, tokens, labels, limited, torch.device("cpu"))
    assert any("another run's from the same weights" in line and "var_self_correction_scales" in line
               for line in lines), lines

    lines.clear()
    plain = argparse.Namespace(**{**vars(args), "var_self_correction": 0.0, "var_steps": 3})
    script.train_var(vae, tokens, labels, plain, torch.device("cpu"))
    assert any("another run's from the same weights" in line and "var_self_correction" in line for line in lines), lines

    lines.clear()
    state = torch.load(tmp_path / "var_state.pt", weights_only=True)
    del state["run"]["var_self_correction"], state["run"]["var_self_correction_scales"]
    torch.save(state, tmp_path / "var_state.pt")
    script.train_var(vae, tokens, labels, argparse.Namespace(**{**vars(plain), "var_steps": 4}), torch.device("cpu"))
    assert any("resumed from" in line and "at step 3" in line for line in lines), lines


# ---- stage 1b with --dec-sampled-scales: the decoder learns from f_hat whose fine scales the VAR drew ----
def tiny_var_for(vae_: VQVAE) -> VAR:
    torch.manual_seed(1)
    return VAR(VARConfig(depth=1, embed_dim=64, num_heads=1, mlp_hidden=128, num_classes=NUM_CLASSES, shared_aln=False,
                         attn_l2_norm=True, patch_nums=PATCH_NUMS, Cvae=8, vocab_size=64)).eval()


@torch.no_grad()
def test_sampled_fine_scales_keep_the_first_k_scales_and_draw_the_rest(script, vae):
    from var_fast.datasets import shapes_batch
    from var_fast.reference.autoregressive import autoregressive_infer_cfg
    var = tiny_var_for(vae)
    img, labels = shapes_batch(3, torch.Generator().manual_seed(4), 64)
    tokens = vae.img_to_idx(img.mul(2).sub(1))
    args = argparse.Namespace(cfg=3.0, top_k=0, top_p=0.8)
    S = len(PATCH_NUMS)
    own = script.sampled_fine_scales_fhat(vae, var, tokens, labels, S, torch.Generator().manual_seed(0), args)
    torch.testing.assert_close(own, vae.quantize.idx_to_fhat(tokens), rtol=0, atol=0)
    none = script.sampled_fine_scales_fhat(vae, var, tokens, labels, 0, torch.Generator().manual_seed(0), args)
    plain, _ = autoregressive_infer_cfg(var, vae, labels, torch.Generator().manual_seed(0), cfg=3.0, top_p=0.8)
    torch.testing.assert_close(none, plain, rtol=0, atol=0)
    # k = 3: the first three scales are the image's, so f_hat minus their part is what the VAR drew after them
    three = script.sampled_fine_scales_fhat(vae, var, tokens, labels, 3, torch.Generator().manual_seed(0), args)
    _, drawn = autoregressive_infer_cfg(var, vae, labels, torch.Generator().manual_seed(0), cfg=3.0, top_p=0.8,
                                        teacher_force=script.TeacherForcing(
                                            tokens, [torch.full_like(t, si < 3, dtype=torch.bool)
                                                     for si, t in enumerate(tokens)], vae.quantize.embedding.weight))
    assert all(torch.equal(drawn[si], tokens[si]) for si in range(3))
    assert not all(torch.equal(drawn[si], tokens[si]) for si in range(3, S))
    torch.testing.assert_close(three, vae.quantize.idx_to_fhat(drawn))


@torch.no_grad()
def test_sampled_fine_scales_with_more_smooth_are_upstreams_more_smooth_draws_after_the_own_scales(script, vae):
    """--dec-more-smooth: the f_hat is the reference loop's with more_smooth (the forced scales' hard code
    embeddings, the drawn ones Gumbel-softmax mixtures), and differs from the hard draws' f_hat."""
    from var_fast.datasets import shapes_batch
    from var_fast.reference.autoregressive import autoregressive_infer_cfg
    var = tiny_var_for(vae)
    img, labels = shapes_batch(3, torch.Generator().manual_seed(4), 64)
    tokens = vae.img_to_idx(img.mul(2).sub(1))
    hard_args = argparse.Namespace(cfg=3.0, top_k=0, top_p=0.8)
    smooth_args = argparse.Namespace(cfg=3.0, top_k=0, top_p=0.8, dec_more_smooth=True)
    keep = [torch.full_like(t, si < 3, dtype=torch.bool) for si, t in enumerate(tokens)]
    forcing = script.TeacherForcing(tokens, keep, vae.quantize.embedding.weight)
    smooth = script.sampled_fine_scales_fhat(vae, var, tokens, labels, 3, torch.Generator().manual_seed(0), smooth_args)
    upstream, _ = autoregressive_infer_cfg(var, vae, labels, torch.Generator().manual_seed(0), cfg=3.0, top_p=0.8,
                                           teacher_force=forcing, more_smooth=True)
    torch.testing.assert_close(smooth, upstream, rtol=0, atol=0)
    hard = script.sampled_fine_scales_fhat(vae, var, tokens, labels, 3, torch.Generator().manual_seed(0), hard_args)
    assert not torch.allclose(smooth, hard)
    own = script.sampled_fine_scales_fhat(vae, var, tokens, labels, len(PATCH_NUMS), torch.Generator().manual_seed(0),
                                          smooth_args)  # all scales the image's own: nothing drawn, nothing mixed
    torch.testing.assert_close(own, vae.quantize.idx_to_fhat(tokens), rtol=0, atol=0)


@pytest.mark.parametrize("flags, message", [
    (["--dec-steps", "2", "--dec-more-smooth"], "--dec-more-smooth changes how the VAR's draws enter f_hat"),
    (["--dec-steps", "2", "--dec-sampled-scales", "4", "7"], "--dec-sampled-scales: [7] not in 0..6"),
    (["--dec-steps", "2", "--dec-sampled-scales", "4"], "--dec-sampled-scales decodes the samples of a VAR"),
    (["--dec-sampled-scales", "4", "--var-init", "x.pth"], "--dec-sampled-scales belongs to the decoder stage"),
])
def test_dec_sampled_scales_flags_are_checked_before_any_work(script, flags, message, capsys, tmp_path):
    assert_refused_before_any_work(script, flags, message, capsys, tmp_path)


def test_decoder_stage_with_sampled_scales_trains_the_decoder_only_and_is_its_own_run(script, vae, tmp_path,
                                                                                      monkeypatch):
    import copy
    lines = []
    monkeypatch.setattr(script, "log", lines.append)
    var = tiny_var_for(vae)
    monkeypatch.setattr(script, "load_var_for_decoder", lambda args, vae_, device: var)
    model = copy.deepcopy(vae)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    args = argparse.Namespace(seed=0, image_size=64, dec_steps=2, dec_batch=2, dec_lr=1e-3, edge_weight=1.0,
                              lowpass_weight=2.0, state_dir=str(tmp_path), resume=True, save_every=1, log_every=1,
                              dec_sampled_scales=[3, 6], var_init="var.pth", cfg=3.0, top_k=0, top_p=0.8,
                              colour_weight=0.0, disc_weight=0.0, disc_layers=3, disc_classes=False, dec_pixel_from=0,
                              flat_weight=0.0)
    script.finetune_decoder(model, args, torch.device("cpu"))
    after = model.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed and all(k.startswith(("decoder.", "post_quant_conv.")) for k in changed), changed
    assert torch.load(tmp_path / "decoder_state.pt", weights_only=True)["sampled_scales"] == [3, 6]
    lines.clear()
    script.finetune_decoder(model, argparse.Namespace(**{**vars(args), "dec_sampled_scales": None, "dec_steps": 3}),
                            torch.device("cpu"))
    assert any("--dec-sampled-scales [3, 6], not []; starting afresh" in line for line in lines), lines


def test_decoder_stage_refuses_a_var_of_another_vqvae(script, vae, tmp_path):
    """A --var-init VAR whose codebook does not fit the VQVAE is named before the stage starts."""
    from var_fast.checkpoint import CheckpointError
    var = VAR(VARConfig(depth=1, embed_dim=64, num_heads=1, mlp_hidden=128, num_classes=NUM_CLASSES, shared_aln=False,
                        attn_l2_norm=True, patch_nums=PATCH_NUMS, Cvae=8, vocab_size=128))
    path = tmp_path / "var.pth"
    torch.save(var.state_dict(), path)
    args = argparse.Namespace(var_init=str(path), patch_nums=PATCH_NUMS, vae_checkpoint="vae.pth")
    with pytest.raises(CheckpointError, match=r"vocab=128\) does not match VQVAE .vae.pth. \(Cvae=8, vocab=64"):
        script.load_var_for_decoder(args, vae, torch.device("cpu"))


# ---- stage 1b with --colour-weight: the decoder is asked for the foreground's and background's colours ----
def two_area_image(fg_rgb, bg_rgb, size: int = 16) -> torch.Tensor:
    """(1, 3, size, size) in [-1, 1]: a centred square of fg_rgb on bg_rgb."""
    img = torch.tensor(bg_rgb).view(1, 3, 1, 1).repeat(1, 1, size, size)
    q = size // 4
    img[..., q:size - q, q:size - q] = torch.tensor(fg_rgb).view(1, 3, 1, 1)
    return img


def test_colour_loss_is_the_l1_of_the_two_areas_mean_colours(script):
    x = two_area_image([0.8, 0.6, -0.2], [-0.8, -0.7, -0.5])
    assert script.colour_loss(x, x).item() == 0.0
    # brighter foreground (0.1 in red): only the foreground's mean moves, by 0.1 in one of 3 channels
    fg_brighter = x.clone()
    fg_brighter[0, 0, 4:12, 4:12] += 0.1
    torch.testing.assert_close(script.colour_loss(fg_brighter, x), torch.tensor(0.1 / 3))
    # the areas are the training image's: a reconstruction that moves only the pixels between them is not charged
    x_ramp = x.clone()
    x_ramp[..., 3, :] = 0.0  # a mid-brightness row, in neither area
    moved = x_ramp.clone()
    moved[..., 3, :] = 0.7  # as bright as the foreground nearly
    assert script.colour_loss(moved, x_ramp).item() == 0.0
    assert script.colour_loss(x_ramp, moved).item() > 0.0  # read off the other image, the row is foreground


def test_colour_loss_moves_only_the_pixels_of_the_two_areas(script):
    x = two_area_image([0.8, 0.6, -0.2], [-0.8, -0.7, -0.5])
    x[..., 3, :] = 0.0  # a mid-brightness row, in neither area
    rec = (x + 0.05).requires_grad_(True)
    script.colour_loss(rec, x).backward()
    assert rec.grad[..., 3, :].abs().sum() == 0
    assert (rec.grad[..., :3, :] > 0).all() and (rec.grad[..., 4:, :] > 0).all()  # too bright: pushed down


@pytest.mark.parametrize("flags, message", [
    (["--dec-steps", "2", "--colour-weight", "-1"], "--colour-weight must be >= 0, got -1.0"),
    (["--colour-weight", "2"], "--colour-weight belongs to the decoder stage"),
    (["--dec-steps", "2", "--flat-weight", "-1"], "--flat-weight must be >= 0, got -1.0"),
    (["--flat-weight", "2"], "--flat-weight belongs to the decoder stage"),
    (["--dec-steps", "2", "--disc-weight", "-0.5"], "--disc-weight must be >= 0, got -0.5"),
    (["--disc-weight", "0.1"], "--disc-weight belongs to the decoder stage"),
    (["--dec-steps", "2", "--disc-weight", "0.1", "--disc-lr", "0"], "--disc-lr > 0, got 200 and 0.0"),
    (["--dec-steps", "2", "--disc-weight", "0.1", "--disc-layers", "0"], "--disc-layers must be in 1..log2"),
    (["--dec-steps", "2", "--disc-weight", "0.1", "--disc-layers", "7"], "--disc-layers must be in 1..log2"),
    (["--dec-steps", "2", "--disc-classes"], "shape the discriminator of --disc-weight: give --disc-weight"),
    (["--dec-steps", "2", "--disc-layers", "4"], "shape the discriminator of --disc-weight: give --disc-weight"),
    (["--dec-steps", "2", "--disc-init", "x.pt"], "--disc-init starts the discriminator of --disc-weight"),
    (["--dec-steps", "2", "--disc-weight", "0.1", "--disc-init", "missing.pt"],
     "--disc-init 'missing.pt': no such file"),
    (["--dec-steps", "2", "--dec-pixel-from", "7"], "--dec-pixel-from must be in 0..6"),
    (["--dec-steps", "2", "--dec-pixel-from", "3"], "--dec-pixel-from drops pixel losses for steps with sampled"),
])
def test_decoder_loss_flags_are_checked_before_any_work(script, flags, message, capsys, tmp_path):
    assert_refused_before_any_work(script, flags, message, capsys, tmp_path)


def decoder_args(state_dir, **flags) -> argparse.Namespace:
    """A two-step decoder stage on the plain f_hat (no VAR), saved every step; ``flags`` override."""
    return argparse.Namespace(**{**dict(seed=0, image_size=64, dec_steps=2, dec_batch=2, dec_lr=1e-3, edge_weight=1.0,
                                        lowpass_weight=2.0, state_dir=str(state_dir), resume=True, save_every=1,
                                        log_every=1, dec_sampled_scales=None, colour_weight=0.0, disc_weight=0.0,
                                        disc_start=0, disc_lr=1e-3, disc_layers=3, disc_classes=False,
                                        dec_pixel_from=0, flat_weight=0.0, disc_init=""), **flags})


def test_a_decoder_run_with_a_colour_weight_logs_it_and_is_its_own_run(script, vae, tmp_path, monkeypatch):
    import copy
    lines = []
    monkeypatch.setattr(script, "log", lines.append)
    args = decoder_args(tmp_path, colour_weight=3.0)
    model = copy.deepcopy(vae)
    script.finetune_decoder(model, args, torch.device("cpu"))
    assert any(" colour " in line for line in lines) and not any("adversarial" in line for line in lines), lines
    assert torch.load(tmp_path / "decoder_state.pt", weights_only=True)["colour_weight"] == 3.0
    lines.clear()
    script.finetune_decoder(model, argparse.Namespace(**{**vars(args), "dec_steps": 3}), torch.device("cpu"))
    assert any("resumed from" in line and "at step 2" in line for line in lines), lines
    lines.clear()
    script.finetune_decoder(model, argparse.Namespace(**{**vars(args), "colour_weight": 0.0, "dec_steps": 3}),
                            torch.device("cpu"))
    assert any("--colour-weight 3.0, not 0.0; starting afresh" in line for line in lines), lines
    assert not any(" colour " in line for line in lines), lines


# ---- stage 1b with --flat-weight: no texture inside the drawing's flat areas ----
def test_flat_area_loss_is_zero_for_flat_shapes_on_linear_gradients_and_charges_only_blotches(script):
    renders, _ = shapes_batch(16, torch.Generator().manual_seed(0), 64)
    assert script.flat_area_loss(renders.mul(2).sub(1)).item() < 1e-4  # anti-aliased edges stay out of the areas
    x = two_area_image([0.8, 0.6, -0.2], [-0.8, -0.7, -0.5], size=32)
    x = x + torch.linspace(-0.1, 0.1, 32).view(1, 1, 1, 32)  # a linear gradient over both areas: Laplacian 0
    assert script.flat_area_loss(x).item() == pytest.approx(0.0, abs=1e-6)
    blotched = x.clone()
    blotched[..., 15, 15] -= 0.2  # one darker pixel inside the shape
    rec = blotched.clone().requires_grad_(True)
    loss = script.flat_area_loss(rec)
    assert loss.item() > 0
    loss.backward()
    assert rec.grad[..., 15, 15].abs().sum() > 0
    # pixels along the shape's edges (rows/columns 7-8 and 23-24 of the square 8..23) are out of both eroded
    # areas and of their stencils: not charged
    for edge in (7, 8, 23, 24):
        assert rec.grad[..., edge, 8:24].abs().sum() == 0 and rec.grad[..., 8:24, edge].abs().sum() == 0


def assert_logged_and_its_own_run(script, vae, args, monkeypatch, logged: str, state_key: str, attr: str, off,
                                  flag: str) -> None:
    """A decoder run with ``args`` logs ``logged`` and saves ``args.<attr>`` as ``state_key`` of its state; a run
    with ``attr`` set to ``off`` does not resume that state (naming ``flag``) and logs no ``logged``."""
    import copy
    lines = []
    monkeypatch.setattr(script, "log", lines.append)
    script.finetune_decoder(copy.deepcopy(vae), args, torch.device("cpu"))
    assert any(f" {logged} " in line for line in lines), lines
    on = getattr(args, attr)
    assert torch.load(os.path.join(args.state_dir, "decoder_state.pt"), weights_only=True)[state_key] == on
    lines.clear()
    other = argparse.Namespace(**{**vars(args), attr: off, "dec_steps": args.dec_steps + 1})
    script.finetune_decoder(copy.deepcopy(vae), other, torch.device("cpu"))
    assert any(f"{flag} {on}, not {off}; starting afresh" in line for line in lines), lines
    assert not any(f" {logged} " in line for line in lines), lines


def test_a_decoder_run_with_a_flat_weight_logs_it_and_is_its_own_run(script, vae, tmp_path, monkeypatch):
    assert_logged_and_its_own_run(script, vae, decoder_args(tmp_path, flat_weight=5.0), monkeypatch, "flat",
                                  "flat_weight", "flat_weight", 0.0, "--flat-weight")


def test_a_decoder_run_with_more_smooth_draws_is_its_own_run(script, vae, tmp_path, monkeypatch):
    """--dec-more-smooth is part of the decoder state's identity; a state saved before it existed reads as off."""
    import copy
    lines = []
    monkeypatch.setattr(script, "log", lines.append)
    args = decoder_args(tmp_path)
    script.finetune_decoder(copy.deepcopy(vae), args, torch.device("cpu"))
    state = torch.load(tmp_path / "decoder_state.pt", weights_only=True)
    assert state["more_smooth"] is False
    del state["more_smooth"]  # as a state from before the flag
    torch.save(state, tmp_path / "decoder_state.pt")
    lines.clear()
    resumed = argparse.Namespace(**{**vars(args), "dec_steps": 3})
    script.finetune_decoder(copy.deepcopy(vae), resumed, torch.device("cpu"))
    assert any("resumed from" in line and "at step 2" in line for line in lines), lines
    lines.clear()
    smooth = argparse.Namespace(**{**vars(args), "dec_more_smooth": True, "dec_steps": 4})
    script.finetune_decoder(copy.deepcopy(vae), smooth, torch.device("cpu"))
    assert any("--dec-more-smooth False, not True; starting afresh" in line for line in lines), lines


# ---- stage 1b with --disc-weight: a patch discriminator judges the decoder's drawings ----
def test_patch_discriminator_gives_a_logit_per_patch_and_hinge_losses_are_hinges():
    pd = load_script("patch_discriminator")
    torch.manual_seed(0)
    logits = pd.PatchDiscriminator(ch=8)(torch.zeros(2, 3, 64, 64))
    assert logits.shape == (2, 1, 8, 8)
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-3.0, 0.0])
    # real: 0 beyond the margin, 0.5 inside it; fake: 0 beyond, 1 at zero
    torch.testing.assert_close(pd.discriminator_hinge_loss(real, fake), torch.tensor(0.25 + 0.5))
    torch.testing.assert_close(pd.generator_hinge_loss(fake), torch.tensor(1.5))


def test_a_four_layer_discriminator_sees_the_whole_image_and_three_layers_keep_their_saved_keys():
    pd = load_script("patch_discriminator")
    d = pd.PatchDiscriminator(ch=8, layers=4)
    x = torch.randn(2, 3, 64, 64)
    assert d(x).shape == (2, 1, 4, 4)
    torch.testing.assert_close(d(x, torch.tensor([3, 7])), d(x), rtol=0, atol=0)  # unconditional: labels unused
    assert sorted(pd.PatchDiscriminator(ch=8).state_dict()) == [f"net.{i}.{p}" for i in (0, 2, 4, 6)
                                                               for p in ("bias", "weight")]
    with pytest.raises(ValueError, match="at least one stride-2 layer, got 0"):
        pd.PatchDiscriminator(layers=0)


def test_a_class_conditional_discriminator_adds_the_projection_of_its_class_embedding():
    pd = load_script("patch_discriminator")
    torch.manual_seed(0)
    d = pd.PatchDiscriminator(ch=8, layers=4, num_classes=10)
    x = torch.randn(2, 3, 64, 64)
    features = d.net[:-1](x)
    unconditional = d.net[-1](features)
    # the projection, written out: <embedding of the label, features> at every patch
    expected = unconditional + torch.einsum("bchw,bc->bhw", features, d.class_embed(torch.tensor([3, 7])))[:, None]
    torch.testing.assert_close(d(x, torch.tensor([3, 7])), expected)
    assert not torch.allclose(d(x, torch.tensor([3, 7])), d(x, torch.tensor([4, 7])))  # the label matters
    for labels in (None, torch.tensor([3])):
        with pytest.raises(ValueError, match=r"needs one label per image \(2\)"):
            d(x, labels)


def test_adaptive_adversarial_weight_is_the_ratio_of_the_gradients_at_the_last_layer(script):
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    pixel = (3.0 * w).sum()  # gradient (3, 3), norm 3 sqrt 2
    adversarial = (w * torch.tensor([0.0, 1.0])).sum()  # gradient (0, 1), norm 1
    assert script.adaptive_adversarial_weight(pixel, adversarial, w) == pytest.approx(3 * 2 ** 0.5 / (1 + 1e-4))
    assert w.grad is None  # it reads gradients without accumulating them


def test_an_adversarial_decoder_run_trains_both_from_disc_start_and_resumes_both(script, vae, tmp_path, monkeypatch):
    import copy
    lines = []
    monkeypatch.setattr(script, "log", lines.append)
    args = decoder_args(tmp_path, dec_steps=3, disc_weight=0.5, disc_start=1)
    model = copy.deepcopy(vae)
    script.finetune_decoder(model, args, torch.device("cpu"))
    assert any("adversarial" in line and "discriminator" in line for line in lines), lines
    saved = torch.load(tmp_path / "decoder_state.pt", weights_only=True)
    assert saved["disc_weight"] == 0.5 and saved["step"] == 3 and saved["disc"] and saved["disc_opt"]["state"]
    # a resumed run continues the discriminator it saved: two steps in one go equal one step, a resume, one more
    one = argparse.Namespace(**{**vars(args), "dec_steps": 2, "state_dir": str(tmp_path / "a")})
    two = argparse.Namespace(**{**vars(one), "state_dir": str(tmp_path / "b")})
    a, b = copy.deepcopy(vae), copy.deepcopy(vae)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    script.finetune_decoder(a, one, torch.device("cpu"))
    script.finetune_decoder(b, argparse.Namespace(**{**vars(two), "dec_steps": 1}), torch.device("cpu"))
    lines.clear()
    script.finetune_decoder(b, two, torch.device("cpu"))
    assert any("resumed from" in line and "at step 1" in line for line in lines), lines
    sa = torch.load(tmp_path / "a" / "decoder_state.pt", weights_only=True)
    sb = torch.load(tmp_path / "b" / "decoder_state.pt", weights_only=True)
    for key in sa["disc"]:
        torch.testing.assert_close(sa["disc"][key], sb["disc"][key])
    for key in sa["decoder_side"]:
        torch.testing.assert_close(sa["decoder_side"][key], sb["decoder_side"][key])
    lines.clear()
    script.finetune_decoder(copy.deepcopy(vae), argparse.Namespace(**{**vars(args), "disc_weight": 0.0,
                                                                      "dec_steps": 4}), torch.device("cpu"))
    assert any("--disc-weight 0.5, not 0.0; starting afresh" in line for line in lines), lines


def test_the_adversarial_loss_moves_the_decoder_from_disc_start_on_and_not_before(script, vae, tmp_path,
                                                                                monkeypatch):
    import copy
    monkeypatch.setattr(script, "log", lambda line: None)

    def decoder_after(**flags) -> dict:
        model = copy.deepcopy(vae)
        script.finetune_decoder(model, decoder_args(tmp_path, resume=False, save_every=0, **flags), torch.device("cpu"))
        return script.decoder_side(model)

    plain = decoder_after(disc_weight=0.0, disc_start=0)
    not_yet = decoder_after(disc_weight=1.0, disc_start=2)  # the discriminator trains, the decoder is not judged
    judged = decoder_after(disc_weight=1.0, disc_start=0)
    for key in plain:
        torch.testing.assert_close(not_yet[key], plain[key], rtol=0, atol=0)
    assert any(not torch.equal(judged[key], plain[key]) for key in plain)


def test_a_class_conditional_whole_image_discriminator_run_is_its_own_run(script, vae, tmp_path, monkeypatch):
    import copy
    lines = []
    monkeypatch.setattr(script, "log", lines.append)
    args = decoder_args(tmp_path, dec_steps=2, disc_weight=0.5, disc_layers=4, disc_classes=True)
    script.finetune_decoder(copy.deepcopy(vae), args, torch.device("cpu"))
    saved = torch.load(tmp_path / "decoder_state.pt", weights_only=True)
    assert saved["disc_layers"] == 4 and saved["disc_classes"] is True
    assert saved["disc"]["class_embed.weight"].shape[0] == script.NUM_CLASSES
    for flag, change in (("--disc-layers 4, not 3", {"disc_layers": 3}),
                         ("--disc-classes True, not False", {"disc_classes": False})):
        lines.clear()
        script.finetune_decoder(copy.deepcopy(vae), argparse.Namespace(**{**vars(args), **change, "dec_steps": 3}),
                                torch.device("cpu"))
        assert any(flag + "; starting afresh" in line for line in lines), (flag, lines)
        script.finetune_decoder(copy.deepcopy(vae), args, torch.device("cpu"))  # back to the first run's state


def test_disc_init_starts_the_discriminator_from_an_earlier_runs_and_is_part_of_the_identity(script, vae, tmp_path,
                                                                                            monkeypatch):
    import copy
    lines = []
    monkeypatch.setattr(script, "log", lines.append)
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
    earlier = decoder_args(tmp_path / "a", dec_steps=2, disc_weight=0.5)
    script.finetune_decoder(copy.deepcopy(vae), earlier, torch.device("cpu"))
    init = str(tmp_path / "a" / "decoder_state.pt")
    assert script.discriminator_state_problem(init, 3, False) == ""
    # one step at a negligible discriminator lr: what it saves is what it started from
    started = decoder_args(tmp_path / "b", dec_steps=1, disc_weight=0.5, disc_lr=1e-12, disc_init=init)
    script.finetune_decoder(copy.deepcopy(vae), started, torch.device("cpu"))
    assert any("discriminator from " + init in line for line in lines), lines
    fresh = decoder_args(tmp_path / "c", dec_steps=1, disc_weight=0.5, disc_lr=1e-12)
    script.finetune_decoder(copy.deepcopy(vae), fresh, torch.device("cpu"))
    a, b, c = (torch.load(tmp_path / n / "decoder_state.pt", weights_only=True) for n in ("a", "b", "c"))
    assert b["disc_init"] == init and c["disc_init"] == ""
    for key in a["disc"]:
        torch.testing.assert_close(b["disc"][key], a["disc"][key], rtol=0, atol=1e-9)
    assert any(not torch.allclose(c["disc"][key], a["disc"][key]) for key in a["disc"])
    lines.clear()
    script.finetune_decoder(copy.deepcopy(vae), argparse.Namespace(**{**vars(started), "disc_init": "", "dec_steps": 2}),
                            torch.device("cpu"))
    assert any(f"--disc-init {init}, not ; starting afresh" in line for line in lines), lines


def test_disc_init_names_what_keeps_a_state_file_from_starting_the_discriminator(script, vae, tmp_path, monkeypatch):
    import copy
    monkeypatch.setattr(script, "log", lambda line: None)
    assert script.discriminator_state_problem(str(tmp_path / "missing.pt"), 3, False) == "no such file"
    (tmp_path / "text.pt").write_text("not a torch file")
    assert script.discriminator_state_problem(str(tmp_path / "text.pt"), 3, False).startswith("not a decoder state")
    script.finetune_decoder(copy.deepcopy(vae), decoder_args(tmp_path, dec_steps=1), torch.device("cpu"))
    no_disc = str(tmp_path / "decoder_state.pt")
    assert script.discriminator_state_problem(no_disc, 3, False).startswith("holds no discriminator")
    script.finetune_decoder(copy.deepcopy(vae), decoder_args(tmp_path, dec_steps=1, disc_weight=0.5),
                            torch.device("cpu"))
    assert script.discriminator_state_problem(no_disc, 3, False) == ""
    assert "another shape" in script.discriminator_state_problem(no_disc, 4, False)
    assert "another shape" in script.discriminator_state_problem(no_disc, 3, True)


def test_steps_that_keep_fewer_than_dec_pixel_from_scales_drop_the_pixel_exact_losses(script, vae, tmp_path,
                                                                                    monkeypatch):
    """With only the pixel-exact terms weighted (no low-pass, colour or discriminator), a run whose every step
    keeps 1 scale of the image's own leaves the decoder as it was under --dec-pixel-from 2 and moves it under 1."""
    import copy
    monkeypatch.setattr(script, "log", lambda line: None)
    var = tiny_var_for(vae)
    monkeypatch.setattr(script, "load_var_for_decoder", lambda args, vae_, device: var)

    def decoder_after(pixel_from: int) -> dict:
        model = copy.deepcopy(vae)
        args = decoder_args(tmp_path, resume=False, save_every=0, lowpass_weight=0.0, dec_sampled_scales=[1],
                            dec_pixel_from=pixel_from, var_init="var.pth", cfg=3.0, top_k=0, top_p=0.8)
        script.finetune_decoder(model, args, torch.device("cpu"))
        return script.decoder_side(model)

    before = script.decoder_side(vae)
    dropped, kept = decoder_after(2), decoder_after(1)
    for key in before:
        torch.testing.assert_close(dropped[key], before[key], rtol=0, atol=0)
    assert any(not torch.equal(kept[key], before[key]) for key in before)


# ---- stage 1b with --dec-nearest-render: targets that agree with what the VAR drew ----
@pytest.mark.parametrize("flags, message", [
    (["--dec-steps", "2", "--dec-nearest-render", "-1"], "--dec-nearest-render must be >= 0"),
    (["--dec-steps", "2", "--dec-nearest-render", "4"], "--dec-nearest-render picks targets for f_hat the VAR drew"),
])
def test_dec_nearest_render_flags_are_checked_before_any_work(script, flags, message, capsys, tmp_path):
    assert_refused_before_any_work(script, flags, message, capsys, tmp_path)


def test_steps_with_drawn_scales_are_taught_the_nearest_render(script, vae, tmp_path, monkeypatch):
    """The losses compare the drawing with what nearest_renders returns, on steps whose f_hat the VAR drew in part
    only: a stand-in that returns the drawing itself leaves a decoder with only pixel losses where it was (every
    step drawn), and is never called on steps with all of the image's own scales."""
    import copy
    monkeypatch.setattr(script, "log", lambda line: None)
    var = tiny_var_for(vae)
    monkeypatch.setattr(script, "load_var_for_decoder", lambda args, vae_, device: var)
    calls = []

    def the_drawing_itself(drawing, labels, params, n, generator):
        calls.append((drawing.shape, labels.tolist(), params["cx"].numel(), n))
        return drawing.clone(), torch.ones(drawing.shape[0], dtype=torch.bool)

    monkeypatch.setattr(script, "nearest_renders", the_drawing_itself)

    def decoder_after(sampled_scales, nearest: int) -> dict:
        model = copy.deepcopy(vae)
        args = decoder_args(tmp_path, resume=False, save_every=0, lowpass_weight=0.0, dec_sampled_scales=sampled_scales,
                            var_init="var.pth", cfg=3.0, top_k=0, top_p=0.8, dec_nearest_render=nearest)
        script.finetune_decoder(model, args, torch.device("cpu"))
        return script.decoder_side(model)

    before = script.decoder_side(vae)
    taught_the_drawing = decoder_after([1], 5)
    assert len(calls) == 2 and all(c[0] == (2, 3, 64, 64) and c[2] == 2 and c[3] == 5 for c in calls), calls
    for key in before:
        torch.testing.assert_close(taught_the_drawing[key], before[key], rtol=0, atol=0)
    assert any(not torch.equal(v, before[k]) for k, v in decoder_after([1], 0).items())  # the training image
    calls.clear()
    own = decoder_after([len(PATCH_NUMS)], 5)
    assert calls == [] and any(not torch.equal(v, before[k]) for k, v in own.items())


def test_a_decoder_run_with_nearest_render_targets_logs_them_and_is_its_own_run(script, vae, tmp_path, monkeypatch):
    var = tiny_var_for(vae)
    monkeypatch.setattr(script, "load_var_for_decoder", lambda args, vae_, device: var)
    args = decoder_args(tmp_path, dec_sampled_scales=[2], var_init="var.pth", cfg=3.0, top_k=0, top_p=0.8,
                        dec_nearest_render=3)
    assert_logged_and_its_own_run(script, vae, args, monkeypatch, "moved", "nearest_render", "dec_nearest_render", 0,
                                  "--dec-nearest-render")

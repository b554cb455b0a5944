"""scripts/heldout_loss_by_class.py splits the training script's held-out loss by class: its rows must be
the teacher-forced cross-entropy of each class's images, and together the logged figure."""
from __future__ import annotations

import argparse

import pytest
import torch
import torch.nn.functional as F

import var_fast
from var_fast.datasets import CLASS_NAMES
from repo_scripts import load_script


@pytest.fixture(scope="module")
def by_class():
    return load_script("heldout_loss_by_class")


@pytest.fixture(scope="module")
def train_script():
    return load_script("train_default_model")


@pytest.fixture(scope="module")
def sampler():
    return var_fast.load(device="cpu", backend="reference")


@torch.no_grad()
def test_rows_are_each_classes_cross_entropy_and_add_up_to_the_logged_loss(by_class, train_script, sampler):
    var, vae = sampler.var, sampler.vae
    out = by_class.loss_by_class(var, vae, images=60, seed=0, image_size=64)
    tokens, labels = train_script.encode_heldout(vae, argparse.Namespace(seed=0, val_images=60, image_size=64),
                                                 torch.device("cpu"))
    x, target = train_script.teacher_forcing_input(vae.quantize, tokens), torch.cat(tokens, dim=1)
    logged = train_script.heldout_loss(var, x, target, labels, var.patch_nums)
    assert logged.startswith(f"{out['all']['loss']:.4f} ")
    assert sum(row["images"] for name, row in out.items() if name != "all") == 60
    weighted = sum(row["images"] * row["loss"] for name, row in out.items() if name != "all") / 60
    assert weighted == pytest.approx(out["all"]["loss"], abs=1e-3)
    name = next(n for n in CLASS_NAMES if n in out)  # one class by hand, straight from the logits
    sel = labels == CLASS_NAMES.index(name)
    ce = F.cross_entropy(var(labels[sel], x[sel]).transpose(1, 2), target[sel], reduction="none")
    assert out[name]["loss"] == pytest.approx(ce.mean().item(), abs=1e-4)
    first = var.patch_nums[0] ** 2
    assert out[name]["per_scale"][0] == pytest.approx(ce[:, :first].mean().item(), abs=1e-3)
    assert len(out[name]["per_scale"]) == len(var.patch_nums)


@pytest.mark.parametrize("flags, message", [
    (["--images", "0"], "--images must be >= 1"),
    (["--var", "no/such/file.pth"], "--var: no such file"),
])
def test_bad_flags_are_refused_before_any_work(by_class, flags, message, capsys):
    with pytest.raises(SystemExit):
        by_class.main(flags)
    assert message in capsys.readouterr().err

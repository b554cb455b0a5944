"""Collaborative decoding (CoDe) through the command line and editing: sample, sample-fid and Sampler.edit
with a drafter/refiner pair (tests/model_factory.py's d2 drafter and r1 refiner, one VQVAE)."""
import json
import os

import pytest
import torch

import var_fast
from var_fast.cli import main
from test_collaborative import pair_files


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return pair_files("d2", "r1", str(tmp_path_factory.mktemp("code_cli")))


def test_sample_with_a_pair(files, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["sample", "--var", files[0], "--vae", files[1], "--refiner", files[2], "--draft-steps", "2",
               "--classes", "1", "--per-class", "2", "--top-k", "5,10,20,30", "--temperature", "1.1,1.1,1.0,1.0",
               "--device", "cpu", "--out", str(out)])
    assert rc == 0
    err = capsys.readouterr().err
    assert "CoDe pair d2+d1, N=2" in err and "GFLOPs per image" in err
    meta = json.loads((out / "settings.json").read_text())
    assert meta["draft_steps"] == 2 and meta["top_k"] == [5, 10, 20, 30] and meta["temperature"] == [1.1, 1.1, 1.0, 1.0]
    assert len([n for n in os.listdir(out) if n.endswith(".png")]) == 3


@pytest.mark.parametrize("extra, message", [
    (["--draft-steps", "2"], "--draft-steps needs --refiner"),
    (["--refiner", "REFINER"], "--refiner needs --draft-steps"),
    (["--refiner", "REFINER", "--draft-steps", "4"], "draft_steps must be an integer in 1..3"),
    (["--temperature", "0"], "temperature must be a finite number > 0"),
    (["--temperature", "warm"], "temperature must be one value or comma-separated numbers"),
    (["--top-k", "5,x"], "top_k must be one value or comma-separated integers"),
    (["--top-k", "5,10"], "top_k must be one value or one per scale"),
])
def test_bad_pair_flags(files, tmp_path, capsys, extra, message):
    extra = [files[2] if x == "REFINER" else x for x in extra]
    rc = main(["sample", "--var", files[0], "--vae", files[1], "--classes", "1", "--device", "cpu",
               "--out", str(tmp_path / "o"), *extra])
    assert rc == 2
    assert message in capsys.readouterr().err


def test_sample_fid_records_the_pair_and_refuses_another_n(files, tmp_path, capsys):
    out = tmp_path / "fid"
    args = ["sample-fid", "--var", files[0], "--vae", files[1], "--refiner", files[2], "--out", str(out),
            "--per-class", "1", "--classes", "0-2", "--batch-size", "2", "--top-k", "10", "--device", "cpu"]
    assert main(args + ["--draft-steps", "2", "--temperature", "1.1"]) == 0
    manifest = json.loads(next(p for p in out.iterdir() if p.suffix == ".json").read_text())
    settings = manifest["settings"]
    assert settings["draft_steps"] == 2 and settings["temperature"] == 1.1 and settings["refiner"]
    capsys.readouterr()
    assert main(args + ["--draft-steps", "1", "--temperature", "1.1"]) != 0
    assert "draft_steps" in capsys.readouterr().err


@pytest.mark.parametrize("draft_steps", [1, 3])
def test_edit_with_a_pair_keeps_tokens_and_fast_matches_reference(files, device, draft_steps):
    ref = var_fast.load(*files[:2], refiner=files[2], device="cpu", backend="reference")
    fast = var_fast.load(*files[:2], refiner=files[2], device=device, backend="fast")
    images = ref.sample([1, 2], top_k=1, seed=0, draft_steps=2)
    keep = torch.ones(4, 4)
    keep[1:3, 1:3] = 0  # regenerate the centre of the last scale's token grid
    out_r, tok_r = ref.edit(images, keep, [3, 4], top_k=1, seed=0, draft_steps=draft_steps, return_tokens=True)
    out_f, tok_f = fast.edit(images, keep, [3, 4], top_k=1, seed=9, draft_steps=draft_steps, return_tokens=True)
    kept = ref.encode(images)
    assert torch.equal(tok_r[-1][:, 0], kept[-1][:, 0])  # a kept corner token of the last scale
    for si, (a, b) in enumerate(zip(tok_r, tok_f)):
        assert torch.equal(a, b.cpu()), f"scale {si}: greedy edit tokens differ"

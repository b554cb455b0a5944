"""The var-fast command line: files written, progress, and clear errors."""
import json
import os

import pytest
from PIL import Image

from var_fast.cli import main
from model_factory import make_models, save_pair


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    var, vae = make_models("d2")
    return save_pair(var, vae, str(tmp_path_factory.mktemp("cli")))


def test_sample_writes_images_and_grid(ckpts, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["sample", "--var", ckpts[0], "--vae", ckpts[1], "--classes", "1", "7", "--per-class", "3",
               "--cfg", "2", "--top-k", "10", "--top-p", "0.9", "--seed", "0", "--batch-size", "4",
               "--backend", "reference", "--device", "cpu", "--out", str(out)])
    assert rc == 0
    files = sorted(os.listdir(out))
    pngs = [f for f in files if f.endswith(".png") and f != "grid.png"]
    assert pngs == [f"0001_{i:03d}.png" for i in range(3)] + [f"0007_{i:03d}.png" for i in range(3)]
    assert Image.open(out / "0001_000.png").size == (64, 64)
    assert Image.open(out / "grid.png").size == (3 * 66 + 2, 2 * 66 + 2)
    settings = json.loads((out / "settings.json").read_text())
    assert settings["classes"] == [1, 7] and settings["top_k"] == 10
    assert "sampling 6 images" in capsys.readouterr().err  # the progress bar


def test_sample_is_reproducible(ckpts, tmp_path):
    for name in ("a", "b"):
        assert main(["sample", "--var", ckpts[0], "--vae", ckpts[1], "--classes", "2", "--per-class", "2",
                     "--backend", "reference", "--device", "cpu", "--out", str(tmp_path / name)]) == 0
    assert (tmp_path / "a" / "0002_001.png").read_bytes() == (tmp_path / "b" / "0002_001.png").read_bytes()


@pytest.mark.parametrize("extra,message", [
    (["--classes", "10"], "class 10 is out of range"),
    (["--top-p", "1.5"], "top_p must be in"),
    (["--top-k", "-1"], "top_k must be"),
])
def test_bad_arguments(ckpts, tmp_path, capsys, extra, message):
    rc = main(["sample", "--var", ckpts[0], "--vae", ckpts[1], "--backend", "reference", "--device", "cpu",
               "--out", str(tmp_path)] + extra)
    assert rc == 2
    assert message in capsys.readouterr().err


def test_only_one_checkpoint(ckpts, tmp_path, capsys):
    assert main(["sample", "--var", ckpts[0], "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "pass both --var and --vae" in err and "huggingface.co/FoundationVision/var" in err


def test_swapped_checkpoints(ckpts, tmp_path, capsys):
    assert main(["sample", "--var", ckpts[1], "--vae", ckpts[0], "--out", str(tmp_path)]) == 2
    assert "is a VQVAE checkpoint" in capsys.readouterr().err


def test_info(capsys):
    assert main(["info"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["version"] and "cuda_kernels" in info

"""The var-fast command line: files written, progress, and clear errors."""
import json
import os

import pytest
from PIL import Image

import var_fast
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
    assert settings["dtype"] == "float32"  # --dtype auto, resolved: float32 on the CPU
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


# ---- bad input fails before the model loads, with a clear message and nothing left behind ------------
@pytest.mark.parametrize("extra,message", [
    (["--top-p", "1.5"], "top_p must be in"),
    (["--top-p", "-0.1"], "top_p must be in"),
    (["--top-k", "-1"], "top_k must be"),
    (["--cfg", "-1"], "cfg must be a finite number >= 0"),
    (["--cfg", "nan"], "cfg must be a finite number >= 0"),
    (["--classes", "-3"], "class -3 is out of range"),
])
def test_sampling_flags_are_checked_before_loading(ckpts, tmp_path, capsys, no_model_load, extra, message):
    out = tmp_path / "out"
    assert main(["sample", "--var", ckpts[0], "--vae", ckpts[1], "--out", str(out)] + extra) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_out_is_an_existing_file(ckpts, tmp_path, capsys, no_model_load):
    out = tmp_path / "taken.png"
    out.write_bytes(b"keep me")
    assert main(["sample", "--var", ckpts[0], "--vae", ckpts[1], "--out", str(out)]) == 2
    assert f"--out {out} is an existing file; it must be a folder" in capsys.readouterr().err
    assert out.read_bytes() == b"keep me" and sorted(os.listdir(tmp_path)) == ["taken.png"]


def test_out_below_a_file(ckpts, tmp_path, capsys, no_model_load):
    (tmp_path / "file").write_text("x")
    assert main(["sample", "--var", ckpts[0], "--vae", ckpts[1], "--out", str(tmp_path / "file" / "sub")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


@pytest.mark.parametrize("seed", ["-1", str(2**63), str(2**64), "1.5"])
def test_seed_out_of_range(ckpts, tmp_path, capsys, no_model_load, seed):
    with pytest.raises(SystemExit) as exit_:
        main(["sample", "--var", ckpts[0], "--vae", ckpts[1], "--seed", seed, "--out", str(tmp_path / "o")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--seed" in err and ("0 <= seed < 2**63" in err or "must be an integer" in err)


def test_text_file_as_checkpoint(ckpts, tmp_path, capsys):
    text = tmp_path / "notes.pth"
    text.write_text("these are not weights\n")
    assert main(["sample", "--var", str(text), "--vae", ckpts[1], "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"VAR checkpoint '{text}' is not a PyTorch checkpoint (.pth zip/pickle) or safetensors file" in err
    assert "IndexError" not in err and "pop from empty list" not in err


def test_both_checkpoints_missing_are_named_together(tmp_path, capsys):
    var, vae = tmp_path / "no_var.pth", tmp_path / "no_vae.pth"
    assert main(["sample", "--var", str(var), "--vae", str(vae), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"VAR checkpoint file not found: '{var}'; VQVAE checkpoint file not found: '{vae}'" in err


def test_help_shows_the_defaults_used(capsys):
    from var_fast.default_model import default_model_info
    rec = default_model_info()["sampling"]
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"default: {rec['per_class']} for the bundled model, 4 otherwise" in help_text
    assert f"default: {rec['top_p']:g} for the bundled model, 0.96 otherwise" in help_text
    assert f"default: {rec['cfg']:g} for the bundled model, 1.5 otherwise" in help_text
    assert f"default: {rec['top_k']:g} for the bundled model, 900 otherwise" in help_text
    assert "0 <= seed < 2**63" in help_text
    assert "auto: bfloat16 on CUDA, float32 on the CPU (default: auto)" in help_text


def test_bundled_model_file_names(tmp_path):
    """The names README gives: <class:04d>_<class name>_<n:03d>.png for the bundled model."""
    out = tmp_path / "samples"
    assert main(["sample", "--classes", "0", "7", "--per-class", "2", "--backend", "reference", "--device", "cpu",
                 "--out", str(out)]) == 0
    assert sorted(os.listdir(out)) == ["0000_disk_000.png", "0000_disk_001.png", "0007_heart_000.png",
                                       "0007_heart_001.png", "grid.png", "settings.json"]

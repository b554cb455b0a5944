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


# ---- seeds at the edges of their range, on every batch ----------------------------------------------
def _pngs(folder):
    return sorted(f for f in os.listdir(folder) if f.endswith(".png") and f != "grid.png")


@pytest.mark.parametrize("backend", ["reference", "fast"])
@pytest.mark.parametrize("seed", [0, 2**63 - 1])
def test_every_allowed_seed_works_for_every_batch(ckpts, tmp_path, backend, seed):
    if backend == "fast":
        from var_fast.native import extension
        if not extension.available():
            pytest.skip(f"var_fast._C is not built: {extension.load_error()}")
    out = tmp_path / "out"
    # 3 classes x 2 images in batches of 2: three batches
    assert main(["sample", "--var", ckpts[0], "--vae", ckpts[1], "--classes", "0-2", "--per-class", "2",
                 "--batch-size", "2", "--top-k", "10", "--seed", str(seed), "--backend", backend, "--device", "cpu",
                 "--out", str(out)]) == 0
    assert _pngs(out) == [f"000{c}_00{n}.png" for c in range(3) for n in range(2)]
    settings = json.loads((out / "settings.json").read_text())
    assert settings["seed"] == seed and settings["complete"] is True


@pytest.mark.parametrize("seed", [0, 1, 2**62, 2**63 - 1])
def test_batch_seeds_stay_in_range_and_differ(seed):
    from var_fast.cli.sample import batch_seed
    from var_fast.labels import SEED_LIMIT
    seeds = [batch_seed(seed, b) for b in (0, 1, 2, 3, 2**40, 2**63 - 1)]
    assert seeds[0] == seed  # the first batch is Sampler.sample(labels, seed=seed)
    assert all(0 <= s < SEED_LIMIT for s in seeds) and len(set(seeds)) == len(seeds)


def test_first_reference_batch_is_the_api_call(ckpts, tmp_path):
    out = tmp_path / "out"
    assert main(["sample", "--var", ckpts[0], "--vae", ckpts[1], "--classes", "3", "--per-class", "1", "--top-k", "10",
                 "--seed", str(2**63 - 1), "--backend", "reference", "--device", "cpu", "--out", str(out)]) == 0
    sampler = var_fast.load(*ckpts, device="cpu", backend="reference")
    image = sampler.sample([3], cfg=1.5, top_k=10, top_p=0.96, seed=2**63 - 1)[0]
    expected = image.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
    import numpy as np
    assert np.array_equal(np.array(Image.open(out / "0003_000.png")), expected)


# ---- --out over an earlier run: its files are replaced, nothing else is touched -----------------------
def _sample(ckpts, out, *extra):
    return main(["sample", "--var", ckpts[0], "--vae", ckpts[1], "--top-k", "10", "--backend", "reference",
                 "--device", "cpu", "--out", str(out), *extra])


def test_earlier_run_is_replaced_and_other_files_kept(ckpts, tmp_path, capsys):
    out = tmp_path / "out"
    assert _sample(ckpts, out, "--classes", "1", "--per-class", "3") == 0
    (out / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert _sample(ckpts, out, "--classes", "2", "--per-class", "1") == 0
    assert sorted(os.listdir(out)) == ["0002_000.png", "grid.png", "notes.txt", "settings.json"]
    assert (out / "notes.txt").read_text() == "mine"
    assert "removed the 5 files of an earlier var-fast sample run" in capsys.readouterr().err
    settings = json.loads((out / "settings.json").read_text())
    assert settings["classes"] == [2] and settings["files"] == ["0002_000.png", "grid.png"]


def test_stopped_run_is_known_and_replaced(ckpts, tmp_path, monkeypatch):
    """A run stopped after its first batch leaves settings.json (complete: false) listing its files."""
    out = tmp_path / "out"
    calls = []
    real = var_fast.Sampler.sample

    def stop_after_one_batch(self, *args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return real(self, *args, **kwargs)
    monkeypatch.setattr(var_fast.Sampler, "sample", stop_after_one_batch)
    with pytest.raises(KeyboardInterrupt):
        _sample(ckpts, out, "--classes", "1", "--per-class", "4", "--batch-size", "2")
    settings = json.loads((out / "settings.json").read_text())
    assert settings["complete"] is False and _pngs(out) == ["0001_000.png", "0001_001.png"]
    monkeypatch.setattr(var_fast.Sampler, "sample", real)
    assert _sample(ckpts, out, "--classes", "5", "--per-class", "1") == 0
    assert sorted(os.listdir(out)) == ["0005_000.png", "grid.png", "settings.json"]


def test_settings_without_a_file_list_are_read_as_an_earlier_run(ckpts, tmp_path):
    """settings.json as var_fast wrote it before it listed its files: its classes' images and the grid go."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "settings.json").write_text(json.dumps({"classes": [1], "per_class": 2, "seed": 0}))
    for name in ("0001_000.png", "0001_001.png", "grid.png", "0001_005.png", "0004_000.png"):
        (out / name).write_bytes(b"old")
    assert _sample(ckpts, out, "--classes", "2", "--per-class", "1") == 0
    assert sorted(os.listdir(out)) == ["0001_005.png", "0002_000.png", "0004_000.png", "grid.png", "settings.json"]


def test_foreign_settings_json_is_refused_before_loading(ckpts, tmp_path, capsys, no_model_load):
    out = tmp_path / "out"
    out.mkdir()
    (out / "settings.json").write_text('{"theme": "dark"}')
    assert _sample(ckpts, out) == 2
    assert f"--out {out} has a settings.json that var-fast sample did not write" in capsys.readouterr().err
    assert os.listdir(out) == ["settings.json"]


def test_files_no_run_wrote_are_not_overwritten(ckpts, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "grid.png").write_bytes(b"my own grid")
    assert _sample(ckpts, out, "--classes", "1", "--per-class", "1") == 2
    assert f"--out {out} already has grid.png, which no earlier var-fast sample run there wrote" in \
        capsys.readouterr().err
    assert os.listdir(out) == ["grid.png"] and (out / "grid.png").read_bytes() == b"my own grid"


# ---- one --classes syntax for sample and sample-fid -----------------------------------------------------
@pytest.mark.parametrize("classes,expected", [(["0-2"], [0, 1, 2]), (["1,3"], [1, 3]), (["4", "0-1"], [4, 0, 1])])
def test_sample_classes_take_ranges_and_lists(ckpts, tmp_path, classes, expected):
    out = tmp_path / "out"
    assert _sample(ckpts, out, "--per-class", "1", "--classes", *classes) == 0
    assert json.loads((out / "settings.json").read_text())["classes"] == expected
    assert _pngs(out) == sorted(f"{c:04d}_000.png" for c in expected)


@pytest.mark.parametrize("command", ["sample", "sample-fid"])
@pytest.mark.parametrize("classes,message", [
    ("0-x", "--classes: cannot read '0-x'"), ("3-1", "--classes: range 3-1 is empty"),
    ("1,1", "--classes: class 1 is listed twice"), ("-3", "class -3 is out of range: classes are 0 or more"),
])
def test_classes_syntax_is_checked_before_loading(ckpts, tmp_path, capsys, no_model_load, command, classes, message):
    assert main([command, "--var", ckpts[0], "--vae", ckpts[1], "--classes", classes,
                 "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ---- --device cuda without a GPU, help texts ----------------------------------------------------------
@pytest.mark.parametrize("command", ["sample", "sample-fid", "edit"])
def test_cuda_without_a_gpu_names_the_flag(ckpts, tmp_path, capsys, no_model_load, command):
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the no-GPU error cannot occur")
    extra = ["--image", "in.png", "--box", "0", "0", "8", "8", "--out", str(tmp_path / "o.png")] \
        if command == "edit" else ["--out", str(tmp_path / "o")]
    assert main([command, "--var", ckpts[0], "--vae", ckpts[1], "--device", "cuda"] + extra) == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU is available" in err and "use --device cpu" in err and "device='cpu'" not in err


def _subparser(name):
    from var_fast.cli import build_parser
    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    return sub.choices[name]


@pytest.mark.parametrize("command", ["sample", "sample-fid", "edit"])
def test_help_shows_dtype_and_backend_defaults(command):
    parser = _subparser(command)
    help_text = " ".join(parser.format_help().split())
    for flag in ("dtype", "backend"):
        action = next(a for a in parser._actions if a.dest == flag)
        shown = " ".join((action.help % {"default": action.default}).split())
        assert f"(default: {action.default})" in shown and shown in help_text, flag


def test_info_help_has_a_description(capsys):
    with pytest.raises(SystemExit):
        main(["info", "--help"])
    assert "Print, as JSON, var_fast's version" in " ".join(capsys.readouterr().out.split())

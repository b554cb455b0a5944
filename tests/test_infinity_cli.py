"""var-fast sample / sample-fid / info for Infinity on the tiny models: files named after the prompt index,
prompt files (blank lines, missing or empty files refused), flags checked before the model loads, sample-fid
with 1 and 2 processes (torchrun, gloo) giving identical files, a resume with other prompts refused, and
info's memory estimates."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("transformers")

import var_fast  # noqa: E402
from infinity_factory import make_models, save_state_dict  # noqa: E402
import infinity_golden as ig  # noqa: E402
from var_fast.cli import main  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TINY_T5 = os.path.join(HERE, "data", "infinity_tiny_t5")
PROMPTS = ["a dog", "a red cat sitting on a mat, photo", "sunset over the sea"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_infinity_cli")
    model, vae = make_models("2b")
    return save_state_dict(model, str(folder / "t.pth")), save_state_dict(vae, str(folder / "v.pth"))


def model_args(files):
    return ["--transformer", files[0], "--vae", files[1], "--text-encoder", TINY_T5]


SAMPLING = ["--pixels", "0.06M", "--top-k", "2", "--seed", "4", "--device", "cpu"]


@pytest.fixture
def prompt_file(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n")
    return path


def pixels(path):
    return np.asarray(Image.open(path))


def test_sample_prompts_are_named_by_index(files, tmp_path, prompt_file):
    out = tmp_path / "out"
    assert main(["sample", *model_args(files), "--prompts", str(prompt_file), "--per-prompt", "2",
                 "--batch-size", "4", *SAMPLING, "--out", str(out)]) == 0
    names = [f"{p:04d}_{n:03d}.png" for p in range(3) for n in range(2)]
    assert sorted(os.listdir(out)) == sorted(names + ["settings.json"])
    settings = json.loads((out / "settings.json").read_text())
    assert settings["prompts"] == PROMPTS and settings["per_prompt"] == 2 and settings["complete"] is True
    assert settings["cfg"] == 3.0 and settings["top_p"] == 0.97 and settings["tau"] == 1.0  # upstream's defaults
    # image n of prompt p is image 2p + n of the run, whatever the batch: the sampler's own images
    sampler = var_fast.load(transformer=files[0], vae=files[1], text_encoder=TINY_T5, device="cpu")
    flat = [p for p in PROMPTS for _ in range(2)]
    direct = sampler.sample(flat, seed=4, pixels="0.06M", top_k=2, batch_size=1)
    for i, name in enumerate(names):
        expected = direct[i].mul(255).round().byte().permute(1, 2, 0).numpy()
        assert np.array_equal(pixels(out / name), expected), name
    # --prompt (repeated) is the same as the file; running again replaces the earlier run
    assert main(["sample", *model_args(files), "--prompt", PROMPTS[0], "--prompt", PROMPTS[1], *SAMPLING,
                 "--out", str(out)]) == 0
    assert sorted(os.listdir(out)) == ["0000_000.png", "0001_000.png", "settings.json"]
    assert np.array_equal(pixels(out / "0001_000.png"),
                          sampler.sample(PROMPTS[:2], seed=4, pixels="0.06M", top_k=2)[1]
                          .mul(255).round().byte().permute(1, 2, 0).numpy())


def test_sample_backend_fast(files, tmp_path):
    """--backend fast: the fast loop's images (its own per-image stream), recorded in settings.json."""
    out = tmp_path / "fast"
    assert main(["sample", *model_args(files), "--prompt", PROMPTS[0], "--prompt", PROMPTS[2], *SAMPLING,
                 "--backend", "fast", "--out", str(out)]) == 0
    assert json.loads((out / "settings.json").read_text())["backend"] == "fast"
    sampler = var_fast.load(transformer=files[0], vae=files[1], text_encoder=TINY_T5, device="cpu", backend="fast")
    direct = sampler.sample([PROMPTS[0], PROMPTS[2]], seed=4, pixels="0.06M", top_k=2)
    for i in range(2):
        expected = direct[i].mul(255).round().byte().permute(1, 2, 0).numpy()
        assert np.array_equal(pixels(out / f"{i:04d}_000.png"), expected)


@pytest.mark.parametrize("content,message", [
    (None, "no such file"),
    ("", "is empty: write one prompt per line"),
    ("\n", "line 1 is blank"),
    ("a dog\n\na cat\n", "line 2 is blank"),
    ("a dog\n   \na cat\n\n", "lines 2, 4 are blank"),
])
def test_bad_prompt_files(files, tmp_path, capsys, no_model_load, content, message):
    path = tmp_path / "prompts.txt"
    if content is not None:
        path.write_text(content)
    for command in ("sample", "sample-fid"):
        assert main([command, *model_args(files), "--prompts", str(path), *SAMPLING, "--out", str(tmp_path / "o")]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("extra,message", [
    (["--prompt", ""], "--prompt[0] is empty"),
    (["--prompt", "a", "--prompts", "x.txt"], "not both"),
    (["--prompt", "a", "--classes", "3"], "--classes does not apply to an Infinity model"),
    (["--prompt", "a", "--temperature", "1.1"], "--temperature does not apply"),
    (["--prompt", "a", "--aspect-ratio", "9"], "out of range"),
    (["--prompt", "a", "--size", "100"], "expected WIDTHxHEIGHT"),
    (["--prompt", "a", "--size", "512x512", "--pixels", "1M"], "--size WxH or --aspect-ratio/--pixels, not both"),
    (["--prompt", "a", "--top-k", "1,2"], "Infinity takes one integer"),
    (["--prompt", "a", "--top-p", "2"], "top_p must be in [0, 1]"),
    (["--prompt", "a", "--tau", "0"], "tau must be finite numbers > 0"),
    (["--prompt", "a", "--tau", "1,1"], "one per scale (7 scales), got 2 values"),
    (["--prompt", "a", "--cfg-insertion-layer", "2"], "cfg_insertion_layer must be 0"),
])
def test_flags_are_checked_before_loading(files, tmp_path, capsys, no_model_load, extra, message):
    sampling = SAMPLING[2:] if "--size" in extra else SAMPLING  # without --pixels
    assert main(["sample", *model_args(files), *sampling, *extra, "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv,message", [
    (["--prompt", "a", "--transformer", "t.pth"], "missing --vae, --text-encoder"),
    (["--model", "infinity-2b", "--transformer", "t.pth", "--prompt", "a"], "not both"),
    (["--model", "infinity-2b"], "needs prompts"),
    (["--tau", "0.5"], "--tau does not apply to a VAR model"),
    (["--model", "d16", "--negative-prompt", "x"], "--negative-prompt does not apply to a VAR model"),
])
def test_model_flag_combinations(tmp_path, capsys, no_model_load, argv, message):
    assert main(["sample", *argv, "--device", "cpu", "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err


def test_size_picks_ratio_and_budget():
    from var_fast.infinity.sampling_args import parse_size
    assert parse_size("1024x1024") == (1.0, "1M")
    assert parse_size("512x512") == (1.0, "0.25M")
    assert parse_size("1152x864") == (0.75, "1M")
    assert parse_size("256x512") == (2.0, "0.06M")


# ---- sample-fid over a prompt list ---------------------------------------------------------------------------
def fid_args(files, out, prompts, *extra):
    return ["sample-fid", *model_args(files), "--prompts", str(prompts), "--per-prompt", "2", "--batch-size", "2",
            *SAMPLING, "--out", str(out), *extra]


def child_env():
    env = dict(os.environ, OMP_NUM_THREADS="1", VAR_FAST_QUIET="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    return env


def png_bytes(folder):
    return {n: (folder / n).read_bytes() for n in sorted(os.listdir(folder)) if n.endswith(".png")}


def test_sample_fid_one_and_two_processes_give_identical_files(files, tmp_path, prompt_file, capsys):
    single = tmp_path / "single"
    assert main(fid_args(files, single, prompt_file, "--npz")) == 0
    assert sorted(png_bytes(single)) == [f"{i:06d}.png" for i in range(6)]
    manifest = json.loads((single / "sample-fid.json").read_text())
    assert manifest["settings"]["per_prompt"] == 2 and manifest["settings"]["prompts"].startswith("3:")
    double = tmp_path / "double"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           "-m", "var_fast.cli", *fid_args(files, double, prompt_file, "--npz")]
    proc = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 processes" in proc.stderr and "6 written" in proc.stderr
    assert png_bytes(double) == png_bytes(single)
    assert np.array_equal(np.load(f"{double}.npz")["arr_0"], np.load(f"{single}.npz")["arr_0"])
    # image i is prompt i // 2's image i of the seed's stream
    sampler = var_fast.load(transformer=files[0], vae=files[1], text_encoder=TINY_T5, device="cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # --cpu-threads' default
    try:
        image = sampler.sample([PROMPTS[2]], seed=4, image_offset=5, pixels="0.06M", top_k=2)[0]
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(pixels(single / "000005.png"), image.mul(255).round().byte().permute(1, 2, 0).numpy())

    # resumed with the same settings: nothing to do; with other prompts or settings: refused
    capsys.readouterr()
    (single / "000003.png").unlink()
    assert main(fid_args(files, single, prompt_file)) == 0
    assert "1 written, 5 were already there" in capsys.readouterr().err
    assert png_bytes(single) == png_bytes(double)
    other = tmp_path / "other.txt"
    other.write_text("\n".join(PROMPTS[:2] + ["a different prompt"]) + "\n")
    assert main(fid_args(files, single, other)) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "prompts 3:" in err
    assert main(fid_args(files, single, prompt_file, "--tau", "0.5")) == 2
    assert "tau: 1.0 recorded, 0.5 now" in capsys.readouterr().err


def test_sample_fid_backend_fast(files, tmp_path, prompt_file, capsys):
    """sample-fid --backend fast: image i is the fast sampler's image i of the seed (whatever the batch); the
    backend is part of the recorded settings, so a resume with the other backend is refused."""
    out = tmp_path / "fast"
    assert main(fid_args(files, out, prompt_file, "--backend", "fast")) == 0
    assert json.loads((out / "sample-fid.json").read_text())["settings"]["backend"] == "fast"
    sampler = var_fast.load(transformer=files[0], vae=files[1], text_encoder=TINY_T5, device="cpu", backend="fast")
    image = sampler.sample([PROMPTS[2]], seed=4, image_offset=5, pixels="0.06M", top_k=2)[0]
    # the same tokens; the batched and the single run's float kernels may round a pixel to the next level
    ig.assert_close_bytes(torch.from_numpy(pixels(out / "000005.png")),
                          image.mul(255).round().byte().permute(1, 2, 0), "image 5, batched vs alone")
    capsys.readouterr()
    assert main(fid_args(files, out, prompt_file)) == 2
    assert "backend" in capsys.readouterr().err


def test_sample_fid_needs_a_prompt_file(files, tmp_path, capsys, no_model_load):
    assert main(["sample-fid", *model_args(files), "--prompts", "a", "--out", str(tmp_path / "o")]) == 2
    assert "--prompts a: no such file" in capsys.readouterr().err
    assert main(["sample-fid", *model_args(files), "--out", str(tmp_path / "o")]) == 2
    assert "needs --prompts FILE" in capsys.readouterr().err


# ---- info --------------------------------------------------------------------------------------------------
def test_info_prints_memory_estimates(capsys):
    assert main(["info", "--model", "infinity-2b"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == "infinity-2b" and report["schedule"]["tokens"] == 10521
    assert report["schedule"]["image"] == [1024, 1024]
    params = report["parameters"]
    assert 2.1e9 < params["transformer"] < 2.3e9 and params["t5_encoder"] == 1_223_527_424
    options = {(o["weights"], o["t5"]): o for o in report["options"]}
    bf16 = options[("bfloat16", "float16, offload none")]
    # KV cache: 32 blocks x 2 (CFG) x 2048 x (10521 tokens x (float32 K + bf16 V) + 512 text tokens x K,V bf16)
    assert bf16["per_image_gib"]["kv_cache"] == round(32 * 2 * 2048 * (10521 * 6 + 512 * 2 * 2) / 2**30, 2)
    freed = options[("bfloat16", "float16, offload free")]
    peak = "peak_gib_by_images_per_pass"
    assert freed[peak]["1"] < bf16[peak]["1"]
    assert bf16[peak]["1"] < bf16[peak]["2"] < bf16[peak]["4"]
    # a batched pass of 2 adds one image's KV cache and activations, not another decoding
    extra = bf16["per_image_gib"]["kv_cache"] + bf16["per_image_gib"]["activations"]
    assert abs(bf16[peak]["2"] - bf16[peak]["1"] - extra) <= 0.02
    assert bf16["largest_batched_pass"]["80 GB card"] > bf16["largest_batched_pass"]["24 GB card"] >= 1
    assert options[("float32", "float32, offload cpu")]["t5_weights_on_gpu_gib"] == 0


@pytest.mark.parametrize("argv,message", [
    (["info", "--model", "infinity-2b", "--pixels", "2M"], "invalid choice"),
])
def test_info_bad_flags(argv, message, capsys):
    with pytest.raises(SystemExit):
        main(argv)
    assert message in capsys.readouterr().err

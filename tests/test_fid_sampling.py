"""var-fast sample-fid: same bytes on one process or two (torchrun, gloo), after a kill and a resume,
the .npz layout of the FID evaluator, refusal to mix settings, and clear input errors."""
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import var_fast
from var_fast.cli import main
from var_fast.fid.files import MANIFEST
from var_fast.fid.sampling import FidJob, format_classes, image_seed, parse_classes
from var_fast.sampler import Sampler
from model_factory import make_models, save_pair

REPO = os.path.dirname(os.path.dirname(os.path.abspath(var_fast.__file__)))
PER_CLASS, CLASSES, BATCH = 3, "0-4", 4          # 15 images in 4 batches (the last one short)
TOTAL = 15


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    var, vae = make_models("d2")
    return save_pair(var, vae, str(tmp_path_factory.mktemp("fid_ckpt")))


def fid_args(ckpts, out, *extra):
    return ["sample-fid", "--var", ckpts[0], "--vae", ckpts[1], "--out", str(out), "--per-class", str(PER_CLASS),
            "--classes", CLASSES, "--batch-size", str(BATCH), "--top-k", "10", "--top-p", "0.9", "--seed", "3",
            "--device", "cpu", *extra]


def child_env():
    env = dict(os.environ, OMP_NUM_THREADS="1", VAR_FAST_QUIET="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    return env


def png_bytes(folder):
    names = sorted(n for n in os.listdir(folder) if n.endswith(".png"))
    return {n: (folder / n).read_bytes() for n in names}


@pytest.fixture(scope="module")
def single(ckpts, tmp_path_factory):
    """An uninterrupted one-process run with --npz: the reference every other run is compared with."""
    out = tmp_path_factory.mktemp("single") / "fid"
    assert main(fid_args(ckpts, out, "--npz")) == 0
    return out


def test_one_process_run_writes_every_image(single):
    assert sorted(png_bytes(single)) == [f"{i:06d}.png" for i in range(TOTAL)]
    assert len(set(png_bytes(single).values())) == TOTAL  # every image its own draw


@pytest.mark.parametrize("index", [0, 6, 14])
def test_fast_image_is_keyed_by_seed_and_index(ckpts, single, index):
    """Image i alone in a batch, at image_offset=i, is the run's image i (up to rounding in the model)."""
    sampler = var_fast.load(*ckpts, device="cpu", backend="fast")
    alone = sampler.sample([index // PER_CLASS], seed=3, image_offset=index, top_k=10, top_p=0.9)[0]
    pixels = alone.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy().astype(int)
    written = np.asarray(Image.open(single / f"{index:06d}.png")).astype(int)
    assert np.abs(written - pixels).max() <= 1


def test_two_processes_under_torchrun_write_identical_files(ckpts, single, tmp_path):
    out = tmp_path / "fid"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           "-m", "var_fast.cli", *fid_args(ckpts, out, "--npz")]
    proc = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 processes" in proc.stderr and f"{TOTAL} written" in proc.stderr
    assert png_bytes(out) == png_bytes(single)
    assert np.array_equal(np.load(f"{out}.npz")["arr_0"], np.load(f"{single}.npz")["arr_0"])


KILLED_CHILD = """
import os, signal, sys, time
from var_fast.cli import main
from var_fast.sampler import Sampler
out, stop_after, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
original, calls = Sampler.sample, []
def pngs():
    return sum(n.endswith(".png") and n[0] != "." for n in os.listdir(out))
def sample_or_die(self, *args, **kwargs):
    if len(calls) == stop_after:  # once the first batches are on disk, die like a killed job: no cleanup at all
        deadline = time.time() + 60
        while time.time() < deadline and pngs() < stop_after * batch:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGKILL)
    calls.append(1)
    return original(self, *args, **kwargs)
Sampler.sample = sample_or_die
sys.exit(main(sys.argv[4:]))
"""


def test_killed_run_resumes_to_identical_files(ckpts, single, tmp_path, monkeypatch, capsys):
    out = tmp_path / "fid"
    killed = subprocess.run([sys.executable, "-c", KILLED_CHILD, str(out), "2", str(BATCH), *fid_args(ckpts, out)],
                            env=child_env(), capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    # what a kill during a write leaves: a batch with a missing image and a half-written temporary file
    (out / "000001.png").unlink()
    (out / ".tmp-2-424242.png").write_bytes((single / "000002.png").read_bytes()[:50])
    present = {int(n[:6]) for n in os.listdir(out) if n.endswith(".png") and n[0] != "."}
    unfinished = [b for b in FidJob(tuple(range(5)), PER_CLASS, BATCH, 3, 1.5, 10, 0.9).batches()
                  if not set(b) <= present]
    assert 0 < len(unfinished) < 4

    calls = []
    original = Sampler.sample
    monkeypatch.setattr(Sampler, "sample", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    assert main(fid_args(ckpts, out)) == 0
    assert len(calls) == len(unfinished)  # finished batches are skipped
    assert png_bytes(out) == png_bytes(single)
    assert not [n for n in os.listdir(out) if n.startswith(".tmp")]
    assert f"{TOTAL - len(present)} written, {len(present)} were already there" in capsys.readouterr().err


def test_npz_has_the_evaluator_layout(single):
    with np.load(f"{single}.npz") as npz:
        assert npz.files == ["arr_0"]
        arr = npz["arr_0"]
    assert arr.shape == (TOTAL, 64, 64, 3) and arr.dtype == np.uint8
    for i in range(TOTAL):
        assert np.array_equal(arr[i], np.asarray(Image.open(single / f"{i:06d}.png")))


@pytest.mark.parametrize("extra,message", [
    (["--cfg", "2"], "cfg: 1.5 recorded, 2.0 now"),
    (["--batch-size", "5"], "batch_size: 4 recorded, 5 now"),
    (["--per-class", "2"], "per_class: 3 recorded, 2 now"),
    (["--backend", "reference"], "backend: 'fast' recorded, 'reference' now"),
    (["--cpu-threads", "2"], "cpu_threads: 1 recorded, 2 now"),
])
def test_other_settings_are_refused(ckpts, single, capsys, extra, message):
    before = png_bytes(single), (single / MANIFEST).read_bytes()
    assert main(fid_args(ckpts, single, *extra)) == 2
    err = capsys.readouterr().err
    assert "started with other settings" in err and message in err
    assert (png_bytes(single), (single / MANIFEST).read_bytes()) == before


def test_other_checkpoint_is_refused(single, tmp_path, capsys):
    other = save_pair(*make_models("d2", seed=1), str(tmp_path))
    assert main(fid_args(other, single)) == 2
    assert "var: checkpoint fingerprint" in capsys.readouterr().err


def test_images_without_manifest_are_refused(ckpts, single, tmp_path, capsys):
    out = tmp_path / "fid"
    out.mkdir()
    (out / "000000.png").write_bytes((single / "000000.png").read_bytes())
    assert main(fid_args(ckpts, out)) == 2
    assert f"no {MANIFEST}" in capsys.readouterr().err


def test_reference_backend_keys_each_image_by_seed_and_index(ckpts, tmp_path):
    runs = []
    for batch in ("4", "3"):
        out = tmp_path / f"b{batch}"
        args = fid_args(ckpts, out, "--backend", "reference", "--classes", "2,7", "--per-class", "2")
        args[args.index("--batch-size") + 1] = batch
        assert main(args) == 0
        runs.append(png_bytes(out))
    assert runs[0] == runs[1]  # one image per pass: the batch size cannot change a thing
    sampler = var_fast.load(*ckpts, device="cpu", backend="reference")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # sample-fid's --cpu-threads default: the CPU's float reductions depend on it
    try:
        direct = sampler.sample([7], seed=image_seed(3, 3), top_k=10, top_p=0.9)[0]
    finally:
        torch.set_num_threads(threads)
    pixels = direct.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
    assert np.array_equal(np.asarray(Image.open(tmp_path / "b4" / "000003.png")), pixels)


@pytest.mark.parametrize("extra,message", [
    (["--classes", "0-10"], "class 10 is out of range: this model has classes 0..9"),
    (["--classes", "12"], "class 12 is out of range"),
    (["--classes", "4-2"], "range 4-2 is empty"),
    (["--classes", "1,x"], "cannot read 'x'"),
    (["--classes", "1-3,2"], "class 2 is listed twice"),
    (["--top-p", "1.5"], "top_p must be in [0, 1]"),
    (["--top-k", "-1"], "top_k must be an integer >= 0"),
])
def test_bad_input(ckpts, tmp_path, capsys, extra, message):
    assert main(fid_args(ckpts, tmp_path / "fid", *extra)) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "fid").exists()


@pytest.mark.parametrize("value", ["0", "-3"])
def test_per_class_must_be_positive(ckpts, tmp_path, capsys, value):
    with pytest.raises(SystemExit) as exit_info:
        main(fid_args(ckpts, tmp_path / "fid", "--per-class", value))
    assert exit_info.value.code == 2 and "must be a positive integer" in capsys.readouterr().err


def test_only_one_checkpoint_is_an_error(ckpts, tmp_path, capsys):
    assert main(["sample-fid", "--var", ckpts[0], "--out", str(tmp_path / "fid")]) == 2
    assert "pass both --var and --vae" in capsys.readouterr().err


@pytest.mark.parametrize("classes", [(0, 1, 2, 3), (5,), (1, 5, 7), (3, 4, 9, 0, 1), (2, 1, 0)])
def test_class_text_round_trips(classes):
    assert parse_classes(format_classes(classes), 10) == classes
    assert parse_classes(["0-2", "5,7"], 10) == (0, 1, 2, 5, 7)
    assert format_classes(tuple(range(1000))) == "0-999"


@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_ranks_share_fixed_batches(world):
    job = FidJob(tuple(range(7)), 3, 4, 0, 1.5, 0, 0.0)
    batches = [b for rank in range(world) for b in job.batches_of_rank(rank, world)]
    assert sorted(b.start for b in batches) == list(range(0, 21, 4))
    assert sorted(i for b in batches for i in b) == list(range(21))
    assert job.label(0) == 0 and job.label(2) == 0 and job.label(3) == 1 and job.label(20) == 6


@pytest.mark.parametrize("extra,message", [
    (["--top-p", "1.5"], "top_p must be in [0, 1]"),
    (["--top-k", "-1"], "top_k must be an integer >= 0"),
    (["--cfg", "-1"], "cfg must be a finite number >= 0"),
])
def test_flags_are_checked_before_loading(ckpts, tmp_path, capsys, no_model_load, extra, message):
    assert main(fid_args(ckpts, tmp_path / "fid", *extra)) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "fid").exists()


def test_out_is_an_existing_file(ckpts, tmp_path, capsys, no_model_load):
    out = tmp_path / "fid"
    out.write_text("not a folder")
    assert main(fid_args(ckpts, out)) == 2
    assert f"--out {out} is an existing file; it must be a folder" in capsys.readouterr().err
    assert out.read_text() == "not a folder"


def test_npz_path_is_a_folder(ckpts, tmp_path, capsys, no_model_load):
    (tmp_path / "fid.npz").mkdir()
    assert main(fid_args(ckpts, tmp_path / "fid", "--npz")) == 2
    assert f"--npz {tmp_path / 'fid.npz'} is an existing folder" in capsys.readouterr().err
    assert not (tmp_path / "fid").exists()


@pytest.mark.parametrize("seed", ["-1", str(2**63), str(2**64)])
def test_seed_out_of_range(ckpts, tmp_path, capsys, no_model_load, seed):
    with pytest.raises(SystemExit) as exit_info:
        main(fid_args(ckpts, tmp_path / "fid", "--seed", seed))
    assert exit_info.value.code == 2 and "0 <= seed < 2**63" in capsys.readouterr().err


@pytest.mark.parametrize("seed", [-1, 2**63, 2**64])
def test_job_seed_out_of_range(seed):
    with pytest.raises(ValueError, match=r"0 <= seed < 2\*\*63"):
        FidJob((0,), 1, 1, seed, 1.5, 0, 0.0)

"""Published checkpoints by name (var_fast.load("d16"), var-fast --model d16) through huggingface_hub,
against a local Hugging Face cache laid out as the library lays it out, offline (HF_HUB_OFFLINE=1)."""
import hashlib
import os
import subprocess
import sys

import pytest
import torch

import var_fast
from model_factory import make_models, save_pair
from var_fast.hub import HF_REPO, MODEL_NAMES, VAE_FILE

huggingface_hub = pytest.importorskip("huggingface_hub")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(var_fast.__file__)))
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def add_to_hf_cache(cache, files):
    """cache/models--FoundationVision--var/{refs/main, blobs/<sha256>, snapshots/<commit>/<name> -> blob},
    the layout hf_hub_download writes."""
    repo = cache / f"models--{HF_REPO.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "blobs").mkdir(exist_ok=True)
    (repo / "snapshots" / COMMIT).mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    for name, source in files.items():
        data = open(source, "rb").read()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        os.symlink(os.path.join("..", "..", "blobs", blob.name), repo / "snapshots" / COMMIT / name)


@pytest.fixture(scope="module")
def small_checkpoints(tmp_path_factory):
    """Small random-weight models in the published key layout (tests/model_factory.py)."""
    return save_pair(*make_models("d2"), str(tmp_path_factory.mktemp("small")))


@pytest.fixture
def hf_cache(tmp_path, small_checkpoints):
    cache = tmp_path / "hf_cache"
    add_to_hf_cache(cache, {"var_d16.pth": small_checkpoints[0], VAE_FILE: small_checkpoints[1]})
    return cache


def run_cli(args, cache):
    env = dict(os.environ, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1", VAR_FAST_QUIET="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "var_fast.cli", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def test_published_names():
    assert MODEL_NAMES == {f"d{d}": f"var_d{d}.pth" for d in (16, 20, 24, 30, 36)}
    assert VAE_FILE == "vae_ch160v4096z32.pth"


def test_load_by_name_reads_the_hf_cache(hf_cache, small_checkpoints, offline_hub):
    offline_hub(hf_cache)
    sampler = var_fast.load("d16", device="cpu", backend="reference")
    snapshot = hf_cache / "models--FoundationVision--var" / "snapshots" / COMMIT
    assert sampler.source == (str(snapshot / "var_d16.pth"), str(snapshot / VAE_FILE))
    direct = var_fast.load(*small_checkpoints, device="cpu", backend="reference")
    assert torch.equal(sampler.sample([3], seed=5, top_k=10), direct.sample([3], seed=5, top_k=10))


def test_offline_and_not_cached_names_the_missing_file(tmp_path, small_checkpoints, offline_hub):
    cache = tmp_path / "hf_cache"
    add_to_hf_cache(cache, {VAE_FILE: small_checkpoints[1]})  # the VQVAE is there, var_d20.pth is not
    offline_hub(cache)
    with pytest.raises(var_fast.CheckpointError) as err:
        var_fast.load("d20")
    message = str(err.value)
    assert "model d20 needs var_d20.pth from https://huggingface.co/FoundationVision/var" in message
    assert VAE_FILE not in message.split(";")[0]
    assert "HF_HUB_OFFLINE is set" in message and str(cache) in message
    assert "https://huggingface.co/FoundationVision/var/resolve/main/var_d20.pth" in message


def test_unknown_name_lists_the_published_ones():
    with pytest.raises(ValueError, match="d16, d20, d24, d30, d36"):
        var_fast.load("d17")


def test_cli_model_flag_offline_from_the_cache(hf_cache, tmp_path):
    out = tmp_path / "out"
    proc = run_cli(["sample", "--model", "d16", "--classes", "2", "--per-class", "2", "--top-k", "10",
                    "--backend", "reference", "--device", "cpu", "--out", str(out)], hf_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(os.listdir(out)) == ["0002_000.png", "0002_001.png", "grid.png", "settings.json"]


def test_cli_offline_and_not_cached_is_a_clear_error(tmp_path):
    out = tmp_path / "out"
    proc = run_cli(["sample", "--model", "d16", "--classes", "2", "--device", "cpu", "--out", str(out)],
                   tmp_path / "empty_cache")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: model d16 needs var_d16.pth and vae_ch160v4096z32.pth"), proc.stderr
    assert "HF_HUB_OFFLINE is set" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


def test_cli_model_with_paths_is_refused(small_checkpoints, tmp_path):
    from var_fast.cli import main
    assert main(["sample", "--model", "d16", "--var", small_checkpoints[0], "--vae", small_checkpoints[1],
                 "--out", str(tmp_path / "out")]) == 2


# ---- offline without HF_HUB_OFFLINE=1: one short attempt, then the cache or a clear error ---------------
LOAD_AND_TIME = """
import json, time
import huggingface_hub.file_download  # imported before the clock starts: only the Hub's part is timed
import var_fast
from var_fast.hub import published_checkpoints
start = time.monotonic()
try:
    paths = published_checkpoints("d16")  # what var_fast.load("d16") calls first
    error = None
except var_fast.CheckpointError as err:
    paths, error = None, str(err)
seconds = time.monotonic() - start
if paths:
    var_fast.load(*paths, device="cpu", backend="reference")
print(json.dumps({"seconds": seconds, "error": error}))
"""


def load_d16_in_a_new_process(endpoint: str, cache):
    """d16's files in a fresh interpreter (huggingface_hub reads HF_* when imported), timed there, then
    loaded."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=endpoint, HF_HUB_CACHE=str(cache), HF_HUB_DISABLE_PROGRESS_BARS="1", VAR_FAST_QUIET="1",
               OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", LOAD_AND_TIME], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


@pytest.fixture
def closed_port():
    """A loopback port nothing listens on: connecting is refused at once, as with no network."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_network_fails_quickly_and_names_hf_hub_offline(tmp_path, closed_port):
    result, stderr = load_d16_in_a_new_process(f"http://127.0.0.1:{closed_port}", tmp_path / "empty_cache")
    message = result["error"]
    assert message is not None and message.startswith("model d16 needs var_d16.pth and vae_ch160v4096z32.pth")
    assert "could not be reached" in message and "HF_HUB_OFFLINE=1" in message
    assert "downloading" not in stderr and "Retrying" not in stderr, stderr
    # huggingface_hub alone retries 5 times per file (about 24 s each); var_fast tries once
    assert result["seconds"] < 10, result


def test_no_network_uses_the_cache_without_waiting(hf_cache, closed_port):
    result, stderr = load_d16_in_a_new_process(f"http://127.0.0.1:{closed_port}", hf_cache)
    assert result["error"] is None and result["seconds"] < 10, result
    assert "downloading" not in stderr and "Retrying" not in stderr, stderr


@pytest.fixture
def fake_hub(small_checkpoints):
    """A local HTTP server answering as the Hub does for FoundationVision/var's two files (HEAD and GET)."""
    import http.server
    import threading
    files = {"var_d16.pth": open(small_checkpoints[0], "rb").read(), VAE_FILE: open(small_checkpoints[1], "rb").read()}
    requests = []

    class Hub(http.server.BaseHTTPRequestHandler):
        def _headers(self):
            prefix = f"/{HF_REPO}/resolve/main/"
            data = files.get(self.path[len(prefix):]) if self.path.startswith(prefix) else None
            requests.append((self.command, self.path))
            if data is None:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            self.send_response(200)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            return data

        def do_HEAD(self):
            self._headers()

        def do_GET(self):
            data = self._headers()
            if data is not None:
                self.wfile.write(data)

        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", requests
    server.shutdown()
    server.server_close()


def test_downloading_is_said_once_when_a_download_starts(tmp_path, fake_hub):
    endpoint, requests = fake_hub
    cache = tmp_path / "hf_cache"
    result, stderr = load_d16_in_a_new_process(endpoint, cache)
    assert result["error"] is None, result
    assert stderr.count("[var_fast] downloading") == 2, stderr
    assert "downloading var_d16.pth" in stderr and f"downloading {VAE_FILE}" in stderr
    assert ("GET", f"/{HF_REPO}/resolve/main/var_d16.pth") in requests
    result, stderr = load_d16_in_a_new_process(endpoint, cache)  # now from the cache
    assert result["error"] is None and "downloading" not in stderr, stderr

"""Infinity by name (var_fast.load("infinity-2b"), --model infinity-2b) against a local Hugging Face cache laid out
as huggingface_hub lays it out, holding the tiny models under the published file names: offline with
HF_HUB_OFFLINE=1 and with the network refused; the 8B layout (a folder of safetensors shards and its index);
missing files named with where to put them."""
import hashlib
import json
import os
import socket
import subprocess
import sys

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("huggingface_hub")

import var_fast  # noqa: E402
from infinity_factory import make_models, save_shards, save_state_dict  # noqa: E402
from var_fast.hub import INFINITY_MODEL_NAMES, INFINITY_REPO, T5_FILES, T5_REPO  # noqa: E402
from var_fast.infinity.sampler import InfinitySampler  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TINY_T5 = os.path.join(HERE, "data", "infinity_tiny_t5")
COMMIT = "89abcdef0123456789abcdef0123456789abcdef"
KW = dict(pixels="0.06M", top_k=2, seed=3)


def add_to_hf_cache(cache, repo, files):
    """cache/models--owner--name/{refs/main, blobs/<sha256>, snapshots/<commit>/<path> -> blob} for
    {path in the repository: local file}: what hf_hub_download writes."""
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "blobs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(COMMIT)
    for name, source in files.items():
        data = open(source, "rb").read()
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = root / "snapshots" / COMMIT / name
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    return root / "snapshots" / COMMIT


def shard_safetensors(path, folder):
    """A safetensors file as google/flan-t5-xl ships its weights: two shards and model.safetensors.index.json."""
    from safetensors.torch import load_file, save_file
    folder.mkdir()
    sd = load_file(path)
    keys, weight_map = sorted(sd), {}
    for i in range(2):
        name = f"model-{i + 1:05d}-of-00002.safetensors"
        save_file({k: sd[k] for k in keys[i::2]}, str(folder / name))
        weight_map.update({k: name for k in keys[i::2]})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return str(folder)


@pytest.fixture(scope="module")
def published_layout(tmp_path_factory):
    """The tiny models' files under the published names: {repo: {path: local file}}."""
    folder = tmp_path_factory.mktemp("published")
    model, vae = make_models("2b")
    big, big_vae = make_models("8b")
    infinity = {"infinity_2b_reg.pth": save_state_dict(model, str(folder / "2b.pth")),
                "infinity_vae_d32reg.pth": save_state_dict(vae, str(folder / "vae.pth")),
                "infinity_vae_d56_f8_14_patchify.pth": save_state_dict(big_vae, str(folder / "vae8.pth"))}
    shards = save_shards(big, str(folder / "8b"), n=2)
    for name in os.listdir(shards):
        infinity[f"infinity_8b_weights/{name}"] = os.path.join(shards, name)
    # the T5 as google/flan-t5-xl holds it: tokenizer files, config, sharded safetensors and their index
    t5 = shard_safetensors(os.path.join(TINY_T5, "model.safetensors"), folder / "t5")
    special = folder / "special_tokens_map.json"
    special.write_text(json.dumps({"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}))
    flan = {name: os.path.join(TINY_T5, name) for name in ("config.json", "tokenizer.json", "tokenizer_config.json")}
    flan["special_tokens_map.json"] = str(special)
    flan.update({name: os.path.join(t5, name) for name in os.listdir(t5)})
    return {INFINITY_REPO: infinity, T5_REPO: flan}


@pytest.fixture
def hf_cache(tmp_path, published_layout):
    cache = tmp_path / "hf_cache"
    for repo, files in published_layout.items():
        add_to_hf_cache(cache, repo, files)
    return cache


def test_published_names():
    assert INFINITY_MODEL_NAMES["infinity-2b"] == ("infinity_2b_reg.pth", "infinity_vae_d32reg.pth", "1M")
    assert INFINITY_MODEL_NAMES["infinity-8b"][:2] == ("infinity_8b_weights", "infinity_vae_d56_f8_14_patchify.pth")
    assert INFINITY_MODEL_NAMES["infinity-8b-512"][2] == "0.25M"
    assert T5_REPO == "google/flan-t5-xl" and "tokenizer.json" in T5_FILES


def test_load_by_name_offline_from_the_cache(hf_cache, published_layout, offline_hub):
    offline_hub(hf_cache)
    sampler = var_fast.load("infinity-2b", device="cpu")
    assert isinstance(sampler, InfinitySampler) and sampler.default_pixels == "1M"
    infinity_snapshot = hf_cache / "models--FoundationVision--Infinity" / "snapshots" / COMMIT
    t5_snapshot = hf_cache / "models--google--flan-t5-xl" / "snapshots" / COMMIT
    assert sampler.source == (str(infinity_snapshot / "infinity_2b_reg.pth"),
                              str(infinity_snapshot / "infinity_vae_d32reg.pth"), str(t5_snapshot))
    files = published_layout[INFINITY_REPO]
    direct = var_fast.load(transformer=files["infinity_2b_reg.pth"], vae=files["infinity_vae_d32reg.pth"],
                           text_encoder=TINY_T5, device="cpu")
    assert torch.equal(sampler.sample(["a dog"], **KW), direct.sample(["a dog"], **KW))


def test_sharded_8b_layout_by_name(hf_cache, offline_hub):
    offline_hub(hf_cache)
    sampler = var_fast.load("infinity-8b", device="cpu")
    assert sampler.source[0].endswith(os.path.join(COMMIT, "infinity_8b_weights"))
    assert sampler.config.d_vae == 4 * sampler.vae.codebook_dim  # spatial patchify
    assert sampler.sample(["a dog"], **KW).shape[0] == 1


def test_offline_and_not_cached_names_the_missing_files(tmp_path, published_layout, offline_hub):
    cache = tmp_path / "hf_cache"
    add_to_hf_cache(cache, INFINITY_REPO, published_layout[INFINITY_REPO])  # no T5 at all
    offline_hub(cache)
    with pytest.raises(var_fast.CheckpointError) as err:
        var_fast.load("infinity-2b", device="cpu")
    message = str(err.value)
    assert message.startswith("model infinity-2b needs config.json and special_tokens_map.json and tokenizer.json")
    assert "https://huggingface.co/google/flan-t5-xl" in message and "HF_HUB_OFFLINE is set" in message
    assert "--transformer/--vae/--text-encoder" in message and str(cache) in message


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="infinity-2b, infinity-8b, infinity-8b-512"):
        var_fast.load("infinity-3b")


@pytest.fixture
def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


LOAD = """
import json, sys, time
import huggingface_hub.file_download
import var_fast
start = time.monotonic()
sampler = var_fast.load("infinity-2b", device="cpu")
seconds = time.monotonic() - start
image = sampler.sample(["a dog"], pixels="0.06M", top_k=2, seed=3)
print(json.dumps({"seconds": seconds, "shape": list(image.shape)}))
"""


def test_network_refused_uses_the_cache(hf_cache, closed_port):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{closed_port}", HF_HUB_CACHE=str(hf_cache), VAR_FAST_QUIET="1",
               OMP_NUM_THREADS="1", HF_HUB_DISABLE_PROGRESS_BARS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, HERE, env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", LOAD], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["shape"][0] == 1 and result["seconds"] < 60
    assert "downloading" not in proc.stderr and "Retrying" not in proc.stderr, proc.stderr


def test_cli_model_flag_offline(hf_cache, tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, HF_HUB_CACHE=str(hf_cache), HF_HUB_OFFLINE="1", VAR_FAST_QUIET="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-m", "var_fast.cli", "sample", "--model", "infinity-2b", "--prompt", "a dog",
                           "--pixels", "0.06M", "--top-k", "2", "--device", "cpu", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(os.listdir(out)) == ["0000_000.png", "settings.json"]


def test_offline_with_nothing_cached_names_both_repositories(tmp_path, offline_hub):
    offline_hub(tmp_path / "empty_cache")
    with pytest.raises(var_fast.CheckpointError) as err:
        var_fast.load("infinity-2b", device="cpu")
    message = str(err.value)
    assert message.startswith("model infinity-2b needs infinity_2b_reg.pth and infinity_vae_d32reg.pth from "
                              "https://huggingface.co/FoundationVision/Infinity")
    assert "Also: model infinity-2b needs config.json and special_tokens_map.json" in message
    assert "https://huggingface.co/google/flan-t5-xl" in message

"""Infinity's text encoder: the features of upstream's ``encode_prompt`` (tools/run_infinity.py) through
transformers, on the tiny random T5 of tests/data/infinity_tiny_t5; the offload modes; bad prompts; and
transformers imported only when an Infinity model is used."""
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("transformers")

from var_fast.infinity.text_condition import TextCondition  # noqa: E402
from var_fast.infinity.text_encoder import MAX_LENGTH, TextEncoder, check_prompts  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TINY_T5 = os.path.join(HERE, "data", "infinity_tiny_t5")
REPO = os.path.dirname(HERE)
PROMPTS = ["a dog", "a red cat sitting on a mat, photo", "a dog", "x" * 3000]  # a repeat; one past 512 tokens


def upstream_encode_prompt(tokenizer, encoder, prompt):
    """upstream encode_prompt's steps for one prompt (tools/run_infinity.py at 4c27bbb), on the CPU."""
    tokens = tokenizer(text=[prompt], max_length=512, padding="max_length", truncation=True, return_tensors="pt")
    features = encoder(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask)["last_hidden_state"].float()
    lens = tokens.attention_mask.sum(dim=-1).tolist()
    return torch.cat([f[:n] for n, f in zip(lens, features.unbind(0))]), lens


@pytest.fixture(scope="module")
def upstream_parts():
    from transformers import AutoTokenizer, T5EncoderModel
    tokenizer = AutoTokenizer.from_pretrained(TINY_T5, legacy=True)
    tokenizer.model_max_length = 512
    encoder = T5EncoderModel.from_pretrained(TINY_T5).float().eval()
    return tokenizer, encoder


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder(TINY_T5)


def test_features_are_upstream_encode_prompt(encoder, upstream_parts):
    cond = encoder.encode(PROMPTS)
    assert isinstance(cond, TextCondition) and cond.features.dtype == torch.float32
    with torch.no_grad():
        parts = [upstream_encode_prompt(*upstream_parts, p) for p in PROMPTS]
    assert cond.lens == [n for _, lens in parts for n in lens]
    assert torch.equal(cond.features, torch.cat([f for f, _ in parts]))
    assert cond.lens[3] == MAX_LENGTH  # truncated as upstream truncates
    assert cond.lens[0] == cond.lens[2] and cond.lens[1] > cond.lens[0]


def test_a_prompt_does_not_depend_on_the_others(encoder):
    alone = [encoder.encode(p) for p in PROMPTS[:2]]
    together = encoder.encode(PROMPTS[:2])
    assert torch.equal(together.features, torch.cat([c.features for c in alone]))
    assert torch.equal(encoder.encode(["a dog"]).features, encoder.encode("a dog").features)


@pytest.mark.parametrize("offload", ["none", "cpu", "free"])
def test_offload_modes_give_the_same_features(encoder, offload):
    other = TextEncoder(TINY_T5, offload=offload)
    assert other.loaded == (offload != "free")
    assert torch.equal(other.encode(PROMPTS[:2]).features, encoder.encode(PROMPTS[:2]).features)
    assert other.loaded == (offload != "free")  # "free": loaded for the call, freed at its end
    assert other.run_device == torch.device("cpu")


@pytest.mark.parametrize("dtype,atol", [(torch.float32, 0.0), (torch.bfloat16, 0.1), (torch.float16, 0.02)])
def test_dtype(encoder, dtype, atol):
    other = TextEncoder(TINY_T5, dtype=dtype)
    assert other.dtype == dtype and next(other.model.parameters()).dtype == dtype
    cond = other.encode(PROMPTS[:2])
    assert cond.features.dtype == torch.float32  # upstream: last_hidden_state.float()
    torch.testing.assert_close(cond.features, encoder.encode(PROMPTS[:2]).features, atol=atol, rtol=0.05 if atol else 0)


@pytest.mark.parametrize("prompts,message", [
    ([], "non-empty list of strings"),
    (None, "non-empty list of strings"),
    (7, "non-empty list of strings"),
    (["a dog", ""], r"prompts\[1\] is empty"),
    (["   "], r"prompts\[0\] is empty"),
    (["a dog", 3], r"prompts\[1\] must be a string, got int"),
])
def test_bad_prompts(prompts, message):
    with pytest.raises(ValueError, match=message):
        check_prompts(prompts)


def test_not_a_folder_or_bad_offload(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        TextEncoder(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        TextEncoder(tmp_path)
    with pytest.raises(ValueError, match="offload must be one of none, cpu, free"):
        TextEncoder(TINY_T5, offload="gpu")


WITHOUT_TRANSFORMERS = """
import sys
sys.modules["transformers"] = None  # as if it were not installed
import var_fast
sampler = var_fast.load(device="cpu", backend="reference")   # VAR needs no transformers
assert sampler.sample([1], seed=0).shape[0] == 1
try:
    var_fast.load("infinity-2b", device="cpu")
except ImportError as err:
    print("ERROR:", err)
"""


def test_var_works_without_transformers_and_infinity_says_what_to_install():
    env = dict(os.environ, VAR_FAST_QUIET="1", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", WITHOUT_TRANSFORMERS], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ERROR: Infinity's text encoder (Flan-T5) needs the transformers package: pip install 'var_fast[infinity]'" \
        in proc.stdout, proc.stdout


CLI_WITHOUT_TRANSFORMERS = """
import sys
sys.modules["transformers"] = None  # as if it were not installed
from var_fast.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_cli_without_transformers_is_a_one_line_error(tmp_path):
    env = dict(os.environ, VAR_FAST_QUIET="1", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", CLI_WITHOUT_TRANSFORMERS, "sample", "--model", "infinity-2b",
                           "--prompt", "a dog", "--device", "cpu", "--out", str(tmp_path / "o")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("error: Infinity's text encoder (Flan-T5) needs the transformers package: "
                                  "pip install 'var_fast[infinity]'") and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()

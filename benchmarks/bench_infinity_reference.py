"""Infinity reference sampler: var_fast's ``infer_reference`` against upstream FoundationVision/Infinity's own
``autoregressive_infer_cfg``, in the same process, on the same small random-weight models, float32 on the CPU.

Upstream runs from a checkout (commit 4c27bbb) through benchmarks/infinity_upstream.py (the module that also
makes the golden test data: flash-attn replaced by an exact PyTorch stand-in there, nowhere else). Models:
the two golden shapes ("tiny", "tiny_patchify") and a wider "small" (8 blocks, width 256, 4 heads, d = 16),
each built in upstream's classes from a seed and loaded into var_fast's classes from upstream's state dicts.
Text: the tiny T5 of tests/data (256 channels). One call = the whole sampling of a 0.06M 1:1 image (7 scales up
to 16x16), cfg 3 on the logits with the learned unconditional embedding, run_infinity's top_k 900 / top_p 0.97,
seed 0, VAE decode included (upstream's call decodes). Before timing, both sides are run once and must give
the same bits and image.

    VAR_FAST_INFINITY_CHECKOUT=/tmp/infinity OMP_NUM_THREADS=1 \\
        python -m pytest benchmarks/bench_infinity_reference.py --benchmark-only

Skips (with the reason) without VAR_FAST_INFINITY_CHECKOUT or without upstream's pure-Python imports
(einops, pytz) and transformers.
"""
from __future__ import annotations

import importlib.util
import os

import pytest
import torch

CHECKOUT = os.environ.get("VAR_FAST_INFINITY_CHECKOUT")
MISSING = [m for m in ("einops", "pytz", "transformers") if importlib.util.find_spec(m) is None]
pytestmark = [
    pytest.mark.skipif(not CHECKOUT, reason="set VAR_FAST_INFINITY_CHECKOUT to a FoundationVision/Infinity "
                                            "checkout (commit 4c27bbb) to time upstream's sampler"),
    pytest.mark.skipif(bool(MISSING), reason=f"upstream Infinity needs {', '.join(MISSING)} (pip install)"),
]

T5_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "infinity_tiny_t5")
PROMPTS = ["a photo of a red cat", "an oil painting of a small house near the river at night",
           "dog", "a blue bird flying over the mountain, watercolor style"]
SETTINGS = dict(cfg=3.0, tau=1.0, top_k=900, top_p=0.97, seed=0)  # run_infinity's top_k / top_p
MODELS = ("tiny", "tiny_patchify", "small")
BATCHES = (1, 4)


@pytest.fixture(scope="module")
def upstream():
    from benchmarks import infinity_upstream as iu

    return iu, iu.import_upstream(CHECKOUT)


@pytest.fixture(scope="module")
def text(upstream):
    iu, _ = upstream
    tokenizer, encoder = iu.load_t5(T5_DIR)
    return lambda prompts: iu.encode_prompt(tokenizer, encoder, prompts)


_MODELS = {}


def _models(upstream, name):
    """(upstream model, upstream VAE, var_fast model, var_fast VAE), the same weights."""
    if name not in _MODELS:
        from var_fast.infinity.loading import bsq_vae_from_state_dict, infinity_from_state_dict

        iu, up = upstream
        spec = iu.BENCH_MODELS[name]
        up_vae = iu.build_vae(up, spec)
        up_model = iu.build_infinity(up, spec, up_vae)
        vae = bsq_vae_from_state_dict(up_vae.state_dict(), f"{name} VAE")
        model = infinity_from_state_dict(up_model.state_dict(), f"{name} transformer",
                                         rope2d_normalized_by_hw=spec.rope2d_normalized_by_hw,
                                         add_lvl_embeding_only_first_block=spec.add_lvl_embeding_only_first_block)
        _MODELS[name] = (up_model, up_vae, model, vae)
    return _MODELS[name]


def _runners(upstream, text, name, batch):
    from var_fast.infinity import TextCondition, infer_reference

    iu, up = upstream
    up_model, up_vae, model, vae = _models(upstream, name)
    _, schedule = iu.scale_schedule(up, 1.0, "0.06M")
    S = len(schedule)
    cond = text((PROMPTS * batch)[:batch])
    s = SETTINGS

    def run_upstream():
        return iu.run_autoregressive(up_model, up_vae, cond, scale_schedule=schedule, cfg_list=[s["cfg"]] * S,
                                     tau_list=[s["tau"]] * S, top_k=s["top_k"], top_p=s["top_p"],
                                     cfg_insertion_layer=[0], g_seed=s["seed"], B=batch)

    def run_var_fast():
        return infer_reference(model, vae, TextCondition(cond[0], cond[1]), schedule, cfg_list=s["cfg"],
                               tau_list=s["tau"], top_k=s["top_k"], top_p=s["top_p"], cfg_insertion_layer=0,
                               seed=s["seed"])

    return run_upstream, run_var_fast


_CHECKED = set()


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("impl", ["upstream", "var_fast"])
def test_infinity_reference_sampler(benchmark, upstream, text, impl, name, batch):
    run_upstream, run_var_fast = _runners(upstream, text, name, batch)
    if (name, batch) not in _CHECKED:  # the timings compare the same work: same bits, same image
        ref, mine = run_upstream(), run_var_fast()
        assert len(ref.bits) == len(mine.bits)
        for si, (a, b) in enumerate(zip(ref.bits, mine.bits)):
            assert torch.equal(a, b.to(a.dtype)), f"{name} B={batch}: bits differ at scale {si}"
        assert torch.equal(ref.image_bgr, mine.images.flip(dims=(3,))), f"{name} B={batch}: images differ"
        _CHECKED.add((name, batch))
    benchmark.extra_info.update(model=name, batch=batch, threads=torch.get_num_threads(), **SETTINGS)
    benchmark.pedantic(run_upstream if impl == "upstream" else run_var_fast, rounds=3, iterations=1)

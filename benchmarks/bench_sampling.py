"""Fused top-k/top-p (+ CFG) sampling against the upstream sort-based sampler and a torch baseline.

    VAR_FAST_EXTENSION=$(cat /tmp/vf_sampling/path) pytest benchmarks/bench_sampling.py --benchmark-only

V = 4096 (VAR's vocabulary), top_k = 900, top_p = 0.96 (VAR's demo settings). Implementations:
  var_fast   the native op (sorting-free, one pass family per row), called with a status word as the
             fast sampler calls it (without one it checks its rows on the host, a wait inside the timing)
  upstream   var_fast.reference.sampling.sample_top_k_top_p_ (FoundationVision/VAR's sort-based code)
  torch_topk torch.topk + softmax + top-p on the sorted top-k + multinomial
  flashinfer flashinfer.sampling.top_k_top_p_sampling_from_logits (CUDA, when flashinfer imports)
CFG cases feed the 2B-row doubled batch (the baselines mix with cfg_mix first). On CPU the largest
cases run a single round (upstream needs seconds there); on CUDA each call ends with a synchronize.
"""
from __future__ import annotations

import pytest
import torch

from var_fast import ops
from var_fast.native import extension as _ext
from var_fast.reference.sampling import cfg_mix, sample_top_k_top_p_

V = 4096
TOP_K = 900
TOP_P = 0.96
GUIDANCE = 1.5
HAS_CUDA = torch.cuda.is_available()
DEVICES = [pytest.param("cpu", id="cpu"),
           pytest.param("cuda", id="cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU"))]
ROWS = [1, 256, 16384]  # B * L
CFG_ROWS = [2, 512, 32768]  # 2B * L: the doubled batch
IMPLS = ["var_fast", "upstream", "torch_topk", "flashinfer"]


def torch_topk_sample(logits: torch.Tensor, top_k: int, top_p: float, rng: torch.Generator) -> torch.Tensor:
    """(B, L, V) -> (B, L): top-k by torch.topk (sorted), top-p on the k survivors, multinomial."""
    B, L, _ = logits.shape
    values, indices = logits.reshape(B * L, -1).float().topk(top_k, dim=-1, sorted=True)
    probs = values.softmax(dim=-1)
    greater = probs.cumsum(dim=-1) - probs  # mass of the more likely tokens
    probs = probs.masked_fill(greater >= top_p, 0.0)
    pick = torch.multinomial(probs, num_samples=1, generator=rng)
    return indices.gather(-1, pick).view(B, L)


def _flashinfer_sample():
    try:
        import flashinfer  # noqa: F401
        from flashinfer.sampling import top_k_top_p_sampling_from_logits
    except Exception as err:  # not installed, or built for another torch/CUDA
        pytest.skip(f"flashinfer unavailable: {type(err).__name__}: {err}")

    def sample(logits: torch.Tensor) -> torch.Tensor:
        B, L, _ = logits.shape
        return top_k_top_p_sampling_from_logits(logits.reshape(B * L, -1), TOP_K, TOP_P).view(B, L)

    return sample


def _sampler(impl: str, device: str, cfg: bool):
    rng = torch.Generator(device=device).manual_seed(0)
    if impl == "var_fast":
        if not _ext.available():
            pytest.skip(f"var_fast extension unavailable: {_ext.load_error()}")
        # with a status word, as the fast sampler calls it: without one the op checks its rows on the host
        status = ops.new_status(device)
        if cfg:
            return lambda x: ops.sample_cfg_top_k_top_p(x, GUIDANCE, TOP_K, TOP_P, seed=1, status=status)
        return lambda x: ops.sample_top_k_top_p(x, TOP_K, TOP_P, seed=1, status=status)
    if impl == "upstream":
        draw = lambda x: sample_top_k_top_p_(x.clone(), TOP_K, TOP_P, rng=rng)  # filters in place
    elif impl == "torch_topk":
        draw = lambda x: torch_topk_sample(x, TOP_K, TOP_P, rng)
    else:
        if device != "cuda":
            pytest.skip("flashinfer is CUDA-only")
        draw = _flashinfer_sample()
    if cfg:
        return lambda x: draw(cfg_mix(x, GUIDANCE))
    return draw


def _run(benchmark, fn, logits, device, rows):
    if device == "cuda":
        call = lambda: (fn(logits), torch.cuda.synchronize())
    else:
        call = lambda: fn(logits)
    if device == "cpu" and rows >= 16384:
        benchmark.pedantic(call, rounds=1, iterations=1, warmup_rounds=0)  # seconds per call for upstream
    else:
        benchmark(call)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("device", DEVICES)
def test_sample_top_k_top_p(benchmark, device, rows, impl):
    benchmark.group = f"sample_top_k_top_p-{device}-rows{rows}"
    fn = _sampler(impl, device, cfg=False)
    B = 1 if rows == 1 else 16
    logits = torch.randn(B, rows // B, V, device=device, generator=torch.Generator(device).manual_seed(1)) * 3
    _run(benchmark, fn, logits, device, rows)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("rows", CFG_ROWS)
@pytest.mark.parametrize("device", DEVICES)
def test_sample_cfg_top_k_top_p(benchmark, device, rows, impl):
    benchmark.group = f"sample_cfg_top_k_top_p-{device}-rows{rows}"
    fn = _sampler(impl, device, cfg=True)
    B2 = 2 if rows == 2 else 32
    logits = torch.randn(B2, rows // B2, V, device=device, generator=torch.Generator(device).manual_seed(2)) * 3
    _run(benchmark, fn, logits, device, rows)

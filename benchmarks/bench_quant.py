"""The multi-scale residual quantization ops against the reference quantizer (pytest-benchmark).

Encoding a batch of feature maps (quant_encode vs MultiScaleQuantizer.f_to_idx): on CPU batch 4 at 256 px;
on CUDA batch 64 at 256 px and 512 px. One sampler step per scale (quant_sampler_step vs
MultiScaleQuantizer.next_autoregressive_input): on CPU batch 4 at 256 px; on CUDA batch 64 at both sizes.
Codebook of the published VQVAE: V = 4096 codes of C = 32, four shared Phi layers.

    python -m pytest benchmarks/bench_quant.py --benchmark-group-by=group
"""
import pytest
import torch

from var_fast import ops
from var_fast.models import PATCH_NUMS_256, PATCH_NUMS_512
from benchmarks.random_quantizer import random_quantizer

HAS_CUDA = torch.cuda.is_available()
PATCHES = {"256px": tuple(PATCH_NUMS_256), "512px": tuple(PATCH_NUMS_512)}
V, C = 4096, 32
IMPLS = [pytest.param("op", id="op"), pytest.param("reference", id="reference")]
CUDA_ONLY = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
# (device, batch, patch set): the CPU case stays around a minute for the whole file.
SETUPS = [pytest.param("cpu", 4, "256px", id="cpu-b4-256px"),
          pytest.param("cuda", 64, "256px", id="cuda-b64-256px", marks=CUDA_ONLY),
          pytest.param("cuda", 64, "512px", id="cuda-b64-512px", marks=CUDA_ONLY)]


def _quantizer(device, patch_nums):
    torch.manual_seed(0)
    return random_quantizer(device, patch_nums, V, C)


def _timed(benchmark, device, fn):
    def run():
        out = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        return out
    run()  # warm-up (lazy initialisation, caches)
    benchmark(run)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("device,batch,patches", SETUPS)
def test_encode(benchmark, device, batch, patches, impl):
    benchmark.group = f"quant_encode-{device}-b{batch}-{patches}"
    patch_nums = PATCHES[patches]
    q, weights, biases, index = _quantizer(device, patch_nums)
    H = patch_nums[-1]
    f = torch.randn(batch, C, H, H, generator=torch.Generator().manual_seed(1)).to(device)
    codebook = q.embedding.weight.detach()
    if impl == "op":
        _timed(benchmark, device, lambda: ops.quant_encode(f, codebook, weights, biases, index, 0.5, patch_nums))
    else:
        _timed(benchmark, device, torch.no_grad()(lambda: q.f_to_idx(f)))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("scale", range(10), ids=lambda si: f"si{si}")
@pytest.mark.parametrize("device,batch,patches", SETUPS)
def test_sampler_step(benchmark, device, batch, patches, scale, impl):
    benchmark.group = f"quant_sampler_step-{device}-b{batch}-{patches}-si{scale}"
    patch_nums = PATCHES[patches]
    q, weights, biases, index = _quantizer(device, patch_nums)
    S, H, pn = len(patch_nums), patch_nums[-1], patch_nums[scale]
    tokens = torch.randint(0, V, (batch, pn * pn), generator=torch.Generator().manual_seed(2)).to(device)
    f_hat = torch.zeros(batch, C, H, H, device=device)
    next_size = patch_nums[scale + 1] if scale + 1 < S else 0
    codebook = q.embedding.weight.detach()
    k = index[scale]
    if impl == "op":  # with a status word, as the fast sampler calls it (without one it syncs on the host)
        status = ops.new_status(device)
        _timed(benchmark, device, lambda: ops.quant_sampler_step(tokens, codebook, f_hat, weights[k], biases[k], 0.5,
                                                                 next_size, status=status))
    else:
        @torch.no_grad()
        def step():  # as the reference sampler: embed, then the quantizer's update
            h = q.embedding(tokens).transpose_(1, 2).reshape(batch, C, pn, pn)
            return q.next_autoregressive_input(scale, f_hat, h)
        _timed(benchmark, device, step)

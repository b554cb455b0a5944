"""bsq_scale_update against the reference formulas of Infinity's loop (var_fast.reference.bsq), pytest-benchmark.

One whole schedule of per-scale updates, as the sampler runs them after each scale's bits: Infinity-2B's
quantizer (d = 32, no patchify) on the 1M-pixel square schedule (13 scales, 1x1 .. 64x64), batch 1 on the
CPU (batch 8 too on CUDA). Each round starts from zeroed summed codes.

    python -m pytest benchmarks/bench_bsq.py --benchmark-group-by=group
"""
import pytest
import torch

from var_fast import ops
from var_fast.infinity.schedules import scale_schedule
from var_fast.reference import bsq as ref

HAS_CUDA = torch.cuda.is_available()
D = 32
SCHEDULE = scale_schedule(1.0, "1M")
IMPLS = [pytest.param("op", id="op"), pytest.param("reference", id="reference")]
CUDA_ONLY = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
SETUPS = [pytest.param("cpu", 1, id="cpu-b1"),
          pytest.param("cuda", 1, id="cuda-b1", marks=CUDA_ONLY),
          pytest.param("cuda", 8, id="cuda-b8", marks=CUDA_ONLY)]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("device,batch", SETUPS)
def test_schedule(benchmark, device, batch, impl):
    benchmark.group = f"bsq_scale_update-{device}-b{batch}-1M-d{D}"
    g = torch.Generator().manual_seed(0)
    bits = [torch.randint(0, 2, (batch, h, w, D), generator=g).to(device) for _, h, w in SCHEDULE]
    _, H, W = SCHEDULE[-1]
    summed = torch.zeros(batch, D, H, W, device=device)
    nexts = [s[1:] for s in SCHEDULE[1:]] + [(0, 0)]
    update = ops.bsq_scale_update if impl == "op" else ref.bsq_scale_update

    def run():
        summed.zero_()
        for b, (nh, nw) in zip(bits, nexts):
            update(b, summed, nh, nw, False)
        if device == "cuda":
            torch.cuda.synchronize()

    run()  # warm-up
    benchmark(run)

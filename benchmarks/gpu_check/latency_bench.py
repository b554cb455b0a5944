"""Batch-1 latency of the fast sampler's loop, per scale, and the kernels it launches (README, "Batch-1
latency"): the GPU day's check of the launch-bound model.

For each model: one image with CFG through FastSampler (the loop alone, no VQVAE decoding) with CUDA
graphs, timed per scale with CUDA events recorded by the loop's ``on_scale`` callback (median of the
timed runs), then the kernels counted with the CUDA profiler (benchmarks/gpu_check/launch_count.py):
per block and scale, per scale outside the blocks and outside the graph, per call, on the eager loop
(graphs off, so that each kernel is attributed to its op), and the device kernels of one graphed call.
"""
from __future__ import annotations

import statistics
import time
from typing import Dict, List

import torch

from . import launch_count
from .random_models import build
from .sampler_bench import sampling_settings


def _per_scale_seconds(sampler, labels, settings, device, reps: int) -> List[List[float]]:
    runs = []
    for _ in range(reps):
        marks = []

        def mark(si=None, S=None):
            if device.type == "cuda":
                event = torch.cuda.Event(enable_timing=True)
                event.record()
                marks.append(event)
            else:
                marks.append(time.perf_counter())
        mark()
        sampler.sample(labels, seed=0, on_scale=mark, **settings)
        if device.type == "cuda":
            torch.cuda.synchronize()
            runs.append([a.elapsed_time(b) / 1e3 for a, b in zip(marks, marks[1:])])
        else:
            runs.append([b - a for a, b in zip(marks, marks[1:])])
    return runs


def _graph_kernels(run) -> int:
    """Device kernels the CUDA profiler saw during one call (graphed: the replayed graphs' kernels)."""
    acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=acts) as prof:
        run()
        torch.cuda.synchronize()
    return sum(len(e.kernels) for e in prof.events())


def run(rec, models: List[str], device: torch.device, dtype: torch.dtype, deadline, reps: int = 5) -> None:
    from var_fast.fast_sampler import FastSampler
    for name in models:
        case = dict(model=name, batch=1, dtype=str(dtype).replace("torch.", ""))
        if deadline.passed():
            rec.add("latency", case=case, impl="fast", status="deadline")
            continue
        try:
            var, vae = build(name, device)
            settings = sampling_settings(var.V)
            labels = torch.zeros(1, dtype=torch.long, device=device)
            graphed = FastSampler(var, vae, dtype=dtype, cuda_graphs=True)
            graphed.sample(labels, seed=0, **settings)  # capture
            runs = _per_scale_seconds(graphed, labels, settings, device, reps)
            per_scale = [statistics.median(r[si] for r in runs) for si in range(len(runs[0]))]
            out: Dict = dict(status="ok", per_scale_ms=[1e3 * s for s in per_scale],
                             total_ms=1e3 * statistics.median(sum(r) for r in runs), runs=reps)
            eager = FastSampler(var, vae, dtype=dtype, cuda_graphs=False)
            loop = lambda: eager.sample(labels, seed=0, **settings)
            if device.type == "cuda":
                counts = launch_count.count_cuda(loop)
                out["kernels_per_image_graphed"] = _graph_kernels(lambda: graphed.sample(labels, seed=0, **settings))
                out["count_rule"] = "CUDA profiler kernels, eager loop"
            else:  # the CPU smoke mode: the ATen-op rule on the CPU path (not a GPU number)
                counts = launch_count.count_emulated(loop)
                out["count_rule"] = "CPU path, ATen-op rule"
            out["kernels"] = launch_count.summary(counts, len(var.blocks), len(var.patch_nums))
            rec.add("latency", case=case, impl="fast", **out)
            del graphed, eager, var, vae
        except Exception as err:
            rec.add("latency", case=case, impl="fast", status="error", error=f"{type(err).__name__}: {str(err)[:200]}")
        if device.type == "cuda":
            torch.cuda.empty_cache()

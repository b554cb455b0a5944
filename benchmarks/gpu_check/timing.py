"""Timing one callable: warm-up, then repeated runs timed with CUDA events on a GPU (the host
clock on the CPU), median reported. The number of runs shrinks to fit the deadline."""
from __future__ import annotations

import statistics
import time
from typing import Callable, Dict, Optional

import torch

from .clock import Deadline


def _once(fn: Callable, cuda: bool) -> float:
    """Seconds of one call."""
    if cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def measure(fn: Callable, device: str, reps: int = 20, warmup: int = 3, deadline: Optional[Deadline] = None,
            min_total_s: float = 0.0) -> Dict[str, float]:
    """{"median_s", "min_s", "runs"}: median over ``reps`` timed calls after ``warmup`` calls. Fewer
    runs (at least one) when the deadline would pass; more, up to 10x, while under ``min_total_s``."""
    cuda = device.startswith("cuda")
    first = max(_once(fn, cuda) for _ in range(max(1, warmup)))
    if deadline is not None:
        reps = max(1, min(reps, int(deadline.left() * 0.9 / max(first, 1e-6))))
    if min_total_s and first * reps < min_total_s:
        reps = min(reps * 10, max(reps, int(min_total_s / max(first, 1e-6))))
    times = [_once(fn, cuda) for _ in range(reps)]
    return dict(median_s=statistics.median(times), min_s=min(times), runs=len(times))

"""Stage 5, Infinity: ``infinity_bench`` in its own process within the stage's time limit (what it measures:
infinity_bench.py's docstring), its output appended to OUT/benchmarks.log (OUT keeps its seven files).

The budget (BUDGETS["infinity"] in main.py, 120 s; ``--skip infinity`` leaves the stage out, ``--budgets
infinity=N`` changes it). Nothing of it has run on a GPU yet; sized from the cases' FLOPs and setup:
Infinity-2B at 1M pixels is about 115 TFLOP per image with CFG (flops.infinity_flops, 64 prompt tokens), so a
loop at a quarter of an H100's ~800 TFLOP/s bf16 peak takes ~0.6 s per image; each backend runs one warm-up
and three timed calls at batch 1 and 8: ~2.5 s + ~20 s, three backends ~70 s; plus Python, torch and
upstream's imports and model setup (upstream precomputes its RoPE tables for every aspect ratio: 5 s on the
development VM's CPU) and the two float32 greedy checks at 0.06M, ~20 s. The child stops starting cases 15 s
before the limit, and a case predicted (from the same backend at a smaller batch) not to finish is left out.
Batch 8 at 1M holds a KV cache of ~66 GiB (var_fast.infinity.memory's estimate): on an 80 GB H100 it may run
out of memory, which the report shows as "OOM" for that case.
"""
from __future__ import annotations

import os
import shlex
import sys
import time
from typing import Dict, List, Optional

from .clock import run_limited, tail
from .stage import PASSED, StageResult
from .verdict import judge_benchmarks, read_records

BATCHES = "1,8"
CPU_BATCHES = "1,2"
STOP_S, GRACE_S = 15.0, 5.0  # as the benchmarks stage: stop starting cases 15 s before the limit
LOG = "benchmarks.log"


def command(args, path: str, deadline: float, cpu: bool, peak_flops: Optional[float]) -> List[str]:
    cmd = [sys.executable, "-m", "benchmarks.gpu_check.infinity_bench", "--records", path, "--deadline",
           f"{deadline:.0f}", "--batches", args.infinity_batches]
    cmd += ["--cpu-smoke"] if cpu else []
    cmd += ["--upstream", os.path.abspath(args.infinity_upstream)] if args.infinity_upstream else []
    cmd += ["--peak-flops", f"{peak_flops:.6g}"] if peak_flops else []
    return cmd


def summary(records: List[Dict]) -> str:
    """What the stage detail adds to the measurement count: the fast loop's availability and both checks."""
    notes = []
    if any(r.get("section") == "infinity" and r.get("impl") == "fast" and r.get("status") == "unavailable"
           for r in records):
        notes.append("fast loop not in this tree")
    for r in records:
        if r.get("section") == "infinity_check":
            notes.append(f"{r['impl']} greedy check {'passed' if r.get('status') == 'ok' else 'refused'}")
    return "; ".join(notes)


def run(args, out: str, limit_s: float, path: str, cpu: bool, peak_flops: Optional[float], root: str) -> StageResult:
    deadline = time.time() + max(0.0, limit_s - STOP_S)
    cmd = command(args, path, deadline, cpu, peak_flops)
    print(f"[gpu-check] infinity: {shlex.join(cmd)} (limit {limit_s:.0f} s)", flush=True)
    done = run_limited(cmd, limit_s, cwd=root, grace_s=GRACE_S)
    with open(os.path.join(out, LOG), "a") as f:
        f.write(f"\n==== infinity stage: {shlex.join(cmd)}\n{done.output}")
    records = read_records(path)
    status, detail = judge_benchmarks(records, done.returncode)
    extra = summary(records)
    return StageResult("infinity", status, done.seconds, limit_s, detail=detail + (f"; {extra}" if extra else ""),
                       command=shlex.join(cmd), log=LOG, output_tail=[] if status == PASSED else tail(done.output))

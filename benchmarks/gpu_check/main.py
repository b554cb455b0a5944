"""``python -m benchmarks.gpu_check --out DIR`` (``make gpu-check OUT=DIR``): build, CUDA tests,
sanitizers, benchmarks, report, each stage within its time budget, the whole within ``--total``.

    make gpu-check OUT=out/gpu ARGS="--upstream ../VAR --models d16,d30"
    python -m benchmarks.gpu_check --cpu-smoke --out build/gpu-check-smoke     # CI: tiny shapes, no GPU
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from typing import Dict, List, Optional

from . import build, cuda_tests, report, sanitizer
from .clock import RunClock, run_limited, tail
from .environment import describe
from .stage import FAILED, PASSED, SKIPPED, TIMEOUT, StageResult

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# seconds; the benchmarks get what is left of --total after these and the report's reserve
BUDGETS = {"build": 120.0, "tests": 100.0, "sanitizers": 100.0}
SMOKE_BUDGETS = {"build": 0.0, "tests": 90.0, "sanitizers": 0.0}
REPORT_RESERVE_S = 10.0


def parse_budgets(text: str, defaults: Dict[str, float]) -> Dict[str, float]:
    """"build=120,tests=90" over the defaults; unknown stage names are an error."""
    budgets = dict(defaults)
    for item in filter(None, text.split(",")):
        name, _, value = item.partition("=")
        if name not in budgets:
            raise ValueError(f"unknown stage {name!r} in --budgets; stages: {', '.join(budgets)}")
        budgets[name] = float(value)
    return budgets


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for report.md, report.json, junit XML and logs")
    p.add_argument("--cpu-smoke", action="store_true", help="tiny shapes on the CPU: no build, no sanitizer (CI)")
    p.add_argument("--upstream", help="a FoundationVision/VAR checkout to time its autoregressive_infer_cfg against")
    p.add_argument("--models", default="d16,d20,d24,d30,d36", help="whole-sampler models, in the order to run them")
    p.add_argument("--batches", default="1,16,64")
    p.add_argument("--total", type=float, default=480.0, help="seconds for the whole run (default 8 minutes)")
    p.add_argument("--budgets", default="", help="per-stage seconds, e.g. build=120,tests=90,sanitizers=60")
    p.add_argument("--skip", default="", help="stages to leave out: build,tests,sanitizers,benchmarks")
    return p


def benchmarks_stage(args, out: str, limit_s: float, path: str) -> StageResult:
    # the child stops starting cases a little before the hard limit, so the limit only catches a hang
    deadline = time.time() + max(0.0, limit_s - 5.0)
    cmd = [sys.executable, "-m", "benchmarks.gpu_check.run_benchmarks", "--records", path, "--deadline", f"{deadline:.0f}",
           "--models", args.models, "--batches", args.batches]
    cmd += ["--cpu-smoke"] if args.cpu_smoke else []
    cmd += ["--upstream", os.path.abspath(args.upstream)] if args.upstream else []
    print(f"[gpu-check] benchmarks: {shlex.join(cmd)} (limit {limit_s:.0f} s)", flush=True)
    done = run_limited(cmd, limit_s, cwd=ROOT, log_path=os.path.join(out, "benchmarks.log"))
    records = read_records(path)
    finished = any(r.get("section") == "done" for r in records)
    cut = sum(1 for r in records if r.get("status") == "deadline")
    measured = sum(1 for r in records if r.get("status") == "ok" and r.get("section") not in ("done", "model"))
    if done.timed_out or (finished and cut):
        status = TIMEOUT
    else:
        status = PASSED if finished and done.returncode == 0 else FAILED
    detail = f"{measured} measurements" + (f", {cut} cases not run (out of time)" if cut else "")
    return StageResult("benchmarks", status, done.seconds, limit_s, detail=detail, command=shlex.join(cmd),
                       log="benchmarks.log", output_tail=[] if status == PASSED else tail(done.output))


def read_records(path: str) -> List[Dict]:
    if not os.path.exists(path):
        return []
    records = []
    with open(path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut off when the process was killed
                pass
    return records


def main(argv=None, started: Optional[float] = None) -> int:
    args = parser().parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    clock = RunClock(args.total, start=started)
    budgets = parse_budgets(args.budgets, SMOKE_BUDGETS if args.cpu_smoke else BUDGETS)
    skip = set(filter(None, args.skip.split(",")))
    stages: List[StageResult] = []
    # OUT keeps 7 files (report.md/.json, junit XML, build/tests/sanitizers/benchmarks logs); the raw
    # records live beside it and are copied into report.json
    records_path = os.path.join(tempfile.mkdtemp(prefix="gpu-check-"), "records.jsonl")

    def limit(name: str) -> float:
        later = [s for s in BUDGETS if list(BUDGETS).index(s) > list(BUDGETS).index(name) and s not in skip]
        return clock.stage_limit(budgets[name], sum(budgets[s] for s in later) + REPORT_RESERVE_S)

    if args.cpu_smoke or "build" in skip:
        stages.append(StageResult("build", SKIPPED, detail="CPU smoke mode: no build" if args.cpu_smoke else "--skip"))
    else:
        stages.append(build.run(ROOT, out, limit("build")))
    built = stages[-1].status in (PASSED, SKIPPED)
    if "tests" in skip or not built:
        stages.append(StageResult("tests", SKIPPED, detail="--skip" if built else "the build failed"))
    else:
        stages.append(cuda_tests.run(ROOT, out, limit("tests"), expect_gpu=not args.cpu_smoke))
    if args.cpu_smoke or "sanitizers" in skip or not built:
        why = "CPU smoke mode: no sanitizer" if args.cpu_smoke else "--skip" if built else "the build failed"
        stages.append(sanitizer.skipped(budgets["sanitizers"], why))
    else:
        stages.append(sanitizer.run(ROOT, out, limit("sanitizers")))
    if "benchmarks" in skip:
        stages.append(StageResult("benchmarks", SKIPPED, detail="--skip"))
    else:
        stages.append(benchmarks_stage(args, out, clock.stage_limit(None, REPORT_RESERVE_S), records_path))
    command = "python -m benchmarks.gpu_check " + shlex.join(argv)
    records = read_records(records_path)
    shutil.rmtree(os.path.dirname(records_path), ignore_errors=True)  # report.json holds them now
    md, js = report.write(out, describe(ROOT), command, [s.to_json() for s in stages], records,
                          clock.elapsed(), args.total, args.cpu_smoke)
    print("\n[gpu-check] seconds per stage (budget):")
    for s in stages:
        budget = f"{s.budget_s:.0f}" if s.budget_s else "-"
        print(f"  {s.name:<11} {s.status:<12} {s.seconds:7.1f} s ({budget})  {s.detail}")
    print(f"  {'total':<11} {'':<12} {clock.elapsed():7.1f} s ({args.total:.0f})")
    print(f"[gpu-check] report: {md} and {js}")
    return 0 if all(s.status in (PASSED, SKIPPED) for s in stages) else 1

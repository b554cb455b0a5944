"""``python -m benchmarks.gpu_check --out DIR`` (``make gpu-check OUT=DIR``): build, CUDA tests,
sanitizers, benchmarks, Infinity, report, each stage within its time budget, the whole within ``--total``.

    make gpu-check OUT=out/gpu ARGS="--upstream ../VAR --models d16,d30"
    make gpu-check OUT=out/gpu ARGS="--infinity-upstream shared/infinity"   # Infinity against its own loop too
    python -m benchmarks.gpu_check --cpu-smoke --out build/gpu-check-smoke     # CI: tiny shapes, no GPU
    python -m benchmarks.gpu_check --rehearse clean --out build/gpu-check-rehearsal  # CI: every stage, recorded tools

Exit code 0 when nothing that ran failed; benchmark cases the budget left out are listed in the report
and do not count.
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
import time
from typing import Dict, List, Optional

from . import build, cuda_tests, infinity_stage, rehearsal, report, sanitizer
from .clock import RunClock, run_limited, tail
from .environment import describe
from .stage import FAILED, PASSED, SKIPPED, TIMEOUT, StageResult
from .verdict import judge_benchmarks, read_records

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STAGES = ("build", "tests", "sanitizers", "benchmarks", "infinity")
# seconds; the benchmarks get what is left of --total after these and the report's reserve, and the
# Infinity stage (last) at least its budget plus whatever the benchmarks leave. How they were sized
# (docs/DEVELOPING.md, "On a GPU machine"): from the CPU-side costs measured on the development VM and,
# for Infinity, the FLOPs of its cases (infinity_stage.py).
BUDGETS = {"build": 90.0, "tests": 100.0, "sanitizers": 150.0, "infinity": 120.0}
SMOKE_BUDGETS = {"build": 0.0, "tests": 90.0, "sanitizers": 0.0, "infinity": 90.0}
REHEARSAL_BUDGETS = {"build": 30.0, "tests": 60.0, "sanitizers": 150.0, "infinity": 90.0}
# the default --total: one GPU command of the lent machines runs 600 s at most, and the report must be
# written before that
TOTAL_S = 570.0
REPORT_RESERVE_S = 10.0
# The benchmarks child stops starting cases BENCH_STOP_S before the stage's limit; the limit itself
# (SIGINT BENCH_GRACE_S before it, then SIGKILL) only catches a case that overran by more than that.
BENCH_STOP_S, BENCH_GRACE_S = 15.0, 5.0
SMOKE_MODELS, SMOKE_BATCHES = "tiny", "1"


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
    from .rehearsal import VARIANTS
    from .run_benchmarks import HEADLINE
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for report.md, report.json, junit XML and logs")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--cpu-smoke", action="store_true", help="tiny shapes on the CPU: no build, no sanitizer (CI)")
    mode.add_argument("--rehearse", choices=sorted(VARIANTS), metavar="VARIANT",
                      help="the whole GPU procedure on the CPU, the GPU-only tools replaced by recorded outputs "
                           f"({', '.join(VARIANTS)}; 'clean' passes, the others fail one stage)")
    p.add_argument("--upstream", help="a FoundationVision/VAR checkout to time its autoregressive_infer_cfg against")
    p.add_argument("--code", help="a czg1225/CoDe checkout to time its draft + refine against (CoDe pair cases)")
    p.add_argument("--models", default="d16,d20,d24,d30,d36", help="whole-sampler models, in the order to run them")
    p.add_argument("--batches", default="1,16,64")
    p.add_argument("--headline", default=HEADLINE,
                   help="MODEL:BATCH cases run first, before the op tables (default: %(default)s)")
    p.add_argument("--infinity-upstream", metavar="DIR",
                   help="a FoundationVision/Infinity checkout (commit 4c27bbb) to time its autoregressive_infer_cfg "
                        "against (the Infinity stage)")
    p.add_argument("--infinity-batches", default=infinity_stage.BATCHES,
                   help="the Infinity stage's batch sizes (default: %(default)s)")
    p.add_argument("--total", type=float, default=TOTAL_S,
                   help="seconds for the whole run (default %(default).0f: 9.5 minutes)")
    p.add_argument("--budgets", default="",
                   help="per-stage seconds, e.g. build=120,tests=90,sanitizers=60,infinity=120")
    p.add_argument("--skip", default="", help="stages to leave out: build,tests,sanitizers,benchmarks,infinity")
    return p


def benchmarks_stage(args, out: str, limit_s: float, path: str, cpu: bool) -> StageResult:
    # the child stops starting cases BENCH_STOP_S before the limit, so the limit only catches an overrun
    deadline = time.time() + max(0.0, limit_s - BENCH_STOP_S)
    cmd = [sys.executable, "-m", "benchmarks.gpu_check.run_benchmarks", "--records", path, "--deadline", f"{deadline:.0f}",
           "--models", args.models, "--batches", args.batches, "--headline", args.headline]
    cmd += ["--cpu-smoke"] if cpu else []
    cmd += ["--upstream", os.path.abspath(args.upstream)] if args.upstream else []
    cmd += ["--code", os.path.abspath(args.code)] if args.code else []
    print(f"[gpu-check] benchmarks: {shlex.join(cmd)} (limit {limit_s:.0f} s)", flush=True)
    done = run_limited(cmd, limit_s, cwd=ROOT, log_path=os.path.join(out, "benchmarks.log"), grace_s=BENCH_GRACE_S)
    status, detail = judge_benchmarks(read_records(path), done.returncode)
    return StageResult("benchmarks", status, done.seconds, limit_s, detail=detail, command=shlex.join(cmd),
                       log="benchmarks.log", output_tail=[] if status == PASSED else tail(done.output))


def exit_code(stages: List[StageResult]) -> int:
    """1 when anything that ran failed: a failed stage, or a correctness stage (build, tests, sanitizers)
    stopped before it finished. Benchmark cases left out or stopped by the budget do not count."""
    bad = [s for s in stages if s.status == FAILED or (s.status == TIMEOUT and s.name != "benchmarks")]
    return 1 if bad else 0


def main(argv=None, started: Optional[float] = None) -> int:
    args = parser().parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    clock = RunClock(args.total, start=started)
    rehearse = args.rehearse
    cpu = args.cpu_smoke or bool(rehearse)
    if args.cpu_smoke:
        args.models, args.batches, args.headline = SMOKE_MODELS, SMOKE_BATCHES, ""
    elif rehearse:
        args.models, args.batches, args.headline = rehearsal.MODELS, rehearsal.BATCHES, rehearsal.HEADLINE
    if cpu:
        args.infinity_batches = infinity_stage.CPU_BATCHES
    defaults = SMOKE_BUDGETS if args.cpu_smoke else REHEARSAL_BUDGETS if rehearse else BUDGETS
    budgets = parse_budgets(args.budgets, defaults)
    skip = set(filter(None, args.skip.split(",")))
    stages: List[StageResult] = []
    # OUT keeps 7 files (report.md/.json, junit XML, build/tests/sanitizers/benchmarks logs); the raw
    # records live beside it and are copied into report.json
    records_path = os.path.join(tempfile.mkdtemp(prefix="gpu-check-"), "records.jsonl")
    if rehearse:
        print(f"[gpu-check] REHEARSAL '{rehearse}': build, CUDA tests and compute-sanitizer replaced by the recorded "
              f"outputs in {os.path.relpath(rehearsal.RECORDED, ROOT)}; the sanitize driver, the benchmarks and the "
              "Infinity stage run on the CPU", flush=True)

    def limit(name: str) -> float:
        later = [s for s in budgets if STAGES.index(s) > STAGES.index(name) and s not in skip]
        return clock.stage_limit(budgets[name], sum(budgets[s] for s in later) + REPORT_RESERVE_S)

    def ended(stage: StageResult) -> None:
        stages.append(stage)
        budget = f"{stage.budget_s:.0f} s" if stage.budget_s else "no budget"
        print(f"[gpu-check] {stage.name}: {stage.status} in {stage.seconds:.1f} s ({budget}); {stage.detail}; "
              f"run so far {clock.elapsed():.1f} s of {args.total:.0f}", flush=True)

    if args.cpu_smoke or "build" in skip:
        ended(StageResult("build", SKIPPED, detail="CPU smoke mode: no build" if args.cpu_smoke else "--skip"))
    elif rehearse:
        ended(build.run(ROOT, out, limit("build"), arch=rehearsal.ARCH, cmd=rehearsal.build_command()))
    else:
        ended(build.run(ROOT, out, limit("build")))
    built = stages[-1].status in (PASSED, SKIPPED)
    if "tests" in skip or not built:
        ended(StageResult("tests", SKIPPED, detail="--skip" if built else "the build failed"))
    else:
        cmd = rehearsal.tests_command(os.path.join(out, cuda_tests.JUNIT)) if rehearse else None
        ended(cuda_tests.run(ROOT, out, limit("tests"), expect_gpu=not args.cpu_smoke, cmd=cmd))
    if args.cpu_smoke or "sanitizers" in skip or not built:
        why = "CPU smoke mode: no sanitizer" if args.cpu_smoke else "--skip" if built else "the build failed"
        ended(sanitizer.skipped(budgets["sanitizers"], why))
    else:
        prefix = rehearsal.sanitizer_prefix(rehearse) if rehearse else None
        ended(sanitizer.run(ROOT, out, limit("sanitizers"), sanitizer=prefix))
    infinity_reserve = 0.0 if "infinity" in skip else budgets["infinity"]
    if "benchmarks" in skip:
        ended(StageResult("benchmarks", SKIPPED, detail="--skip"))
    else:
        ended(benchmarks_stage(args, out, clock.stage_limit(None, REPORT_RESERVE_S + infinity_reserve), records_path, cpu))
    infinity_path = os.path.join(os.path.dirname(records_path), "infinity.jsonl")
    if "infinity" in skip:
        ended(StageResult("infinity", SKIPPED, detail="--skip"))
    else:
        peak = next((r.get("flops_per_s") for r in read_records(records_path) if r.get("section") == "peak"
                     and r.get("status") == "ok"), None)
        ended(infinity_stage.run(args, out, clock.stage_limit(None, REPORT_RESERVE_S), infinity_path, cpu, peak, ROOT))
    command = "python -m benchmarks.gpu_check " + shlex.join(argv)
    records = read_records(records_path) + read_records(infinity_path)
    shutil.rmtree(os.path.dirname(records_path), ignore_errors=True)  # report.json holds them now
    mode = "rehearsal" if rehearse else "smoke" if args.cpu_smoke else "gpu"
    md, js = report.write(out, describe(ROOT), command, [s.to_json() for s in stages], records,
                          clock.elapsed(), args.total, mode)
    print("\n[gpu-check] seconds per stage (budget):")
    for s in stages:
        budget = f"{s.budget_s:.0f}" if s.budget_s else "-"
        print(f"  {s.name:<11} {s.status:<12} {s.seconds:7.1f} s ({budget})  {s.detail}")
    print(f"  {'total':<11} {'':<12} {clock.elapsed():7.1f} s ({args.total:.0f})")
    print(f"[gpu-check] report: {md} and {js}")
    code = exit_code(stages)
    print(f"[gpu-check] exit code {code}: " + ("nothing that ran failed" if code == 0 else
          "failed: " + ", ".join(f"{s.name} {s.status}" for s in stages if s.status in (FAILED, TIMEOUT))), flush=True)
    return code

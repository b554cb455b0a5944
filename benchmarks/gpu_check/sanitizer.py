"""Stage 3: compute-sanitizer's memcheck, racecheck and synccheck over sanitize_driver.py."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
from typing import Dict, List, Optional, Sequence, Union

from .clock import run_limited, tail
from .sanitize_driver import DONE
from .stage import FAILED, PASSED, SKIPPED, TIMEOUT, StageResult

TOOLS = ("memcheck", "racecheck", "synccheck")
LOG = "sanitizers.log"
ERROR_EXITCODE = 86  # what compute-sanitizer exits with when it reported an error (the driver never does)
# share of the stage's budget per tool: racecheck instruments every shared-memory access and is the slowest
SHARES = {"memcheck": 0.3, "racecheck": 0.45, "synccheck": 0.25}


# The verdict is about var_fast's kernels: CUDA API errors that torch's own probing may raise are
# not reported (a failed launch of ours still fails the driver, whose launchers check every launch).
# An older compute-sanitizer that does not know the option is run again without it.
OPTIONAL = ["--report-api-errors", "no"]
_UNKNOWN_OPTION = re.compile(r"unrecogni[sz]ed option|unknown option|invalid option", re.IGNORECASE)


def command(tool: str, sanitizer: Union[str, Sequence[str]] = "compute-sanitizer", python: str = sys.executable,
            optional: bool = True) -> List[str]:
    """``sanitizer`` is the executable, or a command prefix (the rehearsal's recorded-output player)."""
    prefix = [sanitizer] if isinstance(sanitizer, str) else list(sanitizer)
    return (prefix + ["--tool", tool, "--error-exitcode", str(ERROR_EXITCODE), "--print-limit", "100"]
            + (OPTIONAL if optional else [])
            + [python, "-m", "benchmarks.gpu_check.sanitize_driver", "--device", "cuda"])


def rejected_option(output: str) -> bool:
    return bool(_UNKNOWN_OPTION.search(output)) and DONE not in output


def environment(tool: str, base: Dict[str, str]) -> Dict[str, str]:
    env = dict(base)
    if tool == "memcheck":
        # without the caching allocator every tensor is its own allocation, so an access past a
        # tensor's end lands outside an allocation and memcheck sees it
        env["PYTORCH_NO_CUDA_MEMORY_CACHING"] = "1"
    return env


# Each tool ends with its own summary line (formats in benchmarks/gpu_check/rehearsal/recorded/, with
# their sources): memcheck and synccheck print "ERROR SUMMARY: N errors"; racecheck prints
# "RACECHECK SUMMARY: N hazards displayed (E errors, W warnings)" and no ERROR SUMMARY line.
_ERROR_SUMMARY = re.compile(r"ERROR SUMMARY:\s+(\d+)\s+errors?")
_RACE_SUMMARY = re.compile(r"RACECHECK SUMMARY:\s+(\d+)\s+hazards?\s+displayed\s+\((\d+)\s+errors?,\s+(\d+)\s+warnings?\)")
SUMMARY_LINE = {"memcheck": "ERROR SUMMARY", "racecheck": "RACECHECK SUMMARY", "synccheck": "ERROR SUMMARY"}
# the sanitizer's own line when the program under it exited non-zero or died of a signal
TARGET_FAILED = "Target application returned an error"


def findings(tool: str, output: str) -> Optional[int]:
    """What the tool reported, counted from its own summary line(s): errors for memcheck and synccheck,
    hazards (errors and warnings alike) for racecheck; None when the summary line is missing."""
    if tool == "racecheck":
        races = _RACE_SUMMARY.findall(output)
        # an ERROR SUMMARY that some versions may add is counted too, never required
        extra = sum(int(n) for n in _ERROR_SUMMARY.findall(output))
        return None if not races else sum(max(int(h), int(e) + int(w)) for h, e, w in races) + extra
    errors = _ERROR_SUMMARY.findall(output)
    return None if not errors else sum(int(n) for n in errors)


def parse(tool: str, output: str, returncode: Optional[int]) -> Dict:
    """pass/fail of one tool's run, judged by the tool's own summary format, its exit code, whether it
    saw the program fail, and the driver's last line (a crash or an early exit would otherwise look clean)."""
    found = findings(tool, output)
    result = dict(tool=tool, returncode=returncode, findings=found, driver_finished=DONE in output)
    kind = "hazards" if tool == "racecheck" else "errors"
    if returncode is None:
        result.update(verdict=TIMEOUT, reason="stopped at its time limit")
        return result
    reasons = []
    if found is None:
        reasons.append(f"no {SUMMARY_LINE[tool]} line (the tool did not finish or did not run)")
    elif found:
        reasons.append(f"{found} {kind}")
    if TARGET_FAILED in output:
        reasons.append("the driver crashed or exited non-zero under the tool")
    elif not result["driver_finished"]:
        reasons.append("the driver did not finish")
    if returncode != 0 and not reasons:
        reasons.append(f"exit code {returncode}")
    result.update(verdict=FAILED if reasons else PASSED, reason="; ".join(reasons) or f"0 {kind}")
    return result


def tool_limit(tool: str, stage_left: float) -> float:
    """This tool's part of what is left of the stage's budget (time a faster tool left unused carries on)."""
    later = TOOLS[TOOLS.index(tool):]
    return max(0.0, stage_left) * SHARES[tool] / sum(SHARES[t] for t in later)


def run(root: str, out: str, limit_s: float, sanitizer: Union[None, str, Sequence[str]] = None) -> StageResult:
    sanitizer = sanitizer or shutil.which("compute-sanitizer") or _toolkit_sanitizer()
    if sanitizer is None:
        return StageResult("sanitizers", FAILED, budget_s=limit_s, detail="compute-sanitizer not found")
    results, seconds, tails = [], 0.0, []
    open(os.path.join(out, LOG), "w").close()
    optional = True
    for tool in TOOLS:
        while True:
            cmd = command(tool, sanitizer, optional=optional)
            share = tool_limit(tool, limit_s - seconds)
            print(f"[gpu-check] sanitizer: {shlex.join(cmd)} (limit {share:.0f} s)", flush=True)
            done = run_limited(cmd, share, env=environment(tool, os.environ), cwd=root)
            with open(os.path.join(out, LOG), "a") as log:  # one file for the three tools
                log.write(f"===== {' '.join(cmd)}\n{done.output}\n")
            seconds += done.seconds
            if not (optional and rejected_option(done.output)):
                break
            optional = False
        r = parse(tool, done.output, done.returncode)
        r["seconds"] = round(done.seconds, 1)
        results.append(r)
        print(f"[gpu-check] sanitizer {tool}: {r['verdict']}, {r['reason']} ({done.seconds:.1f} s of {share:.0f})",
              flush=True)
        if r["verdict"] != PASSED:
            tails += [f"--- {tool}"] + tail(done.output, 10)
    verdicts = [r["verdict"] for r in results]
    status = PASSED if all(v == PASSED for v in verdicts) else TIMEOUT if TIMEOUT in verdicts and FAILED not in verdicts else FAILED
    detail = ", ".join(f"{r['tool']} {r['verdict']}" + (f" ({r['reason']})" if r["verdict"] != PASSED else "")
                       for r in results)
    return StageResult("sanitizers", status, seconds, limit_s, detail=detail,
                       command=" | ".join(" ".join(command(t, "compute-sanitizer", "python")) for t in TOOLS),
                       log=LOG, data=dict(tools=results), output_tail=tails)


def _toolkit_sanitizer() -> Optional[str]:
    for root in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        for sub in ("bin", "compute-sanitizer"):
            path = os.path.join(root or "", sub, "compute-sanitizer")
            if root and os.path.isfile(path):
                return path
    return None


def skipped(limit_s: float, why: str) -> StageResult:
    return StageResult("sanitizers", SKIPPED, budget_s=limit_s, detail=why)

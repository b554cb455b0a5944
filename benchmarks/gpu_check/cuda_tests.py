"""Stage 2: every CUDA test (``pytest -m cuda``), the end-to-end guards among them, junit XML in OUT."""
from __future__ import annotations

import os
import sys
import xml.etree.ElementTree as ET
from typing import Dict, List, Optional

from .clock import run_limited, tail
from .stage import FAILED, PASSED, TIMEOUT, StageResult

# The end-to-end guards, reported on their own line: the bundled model's class accuracy (fast backend
# on the GPU, CUDA graphs on and off), editing, and the fast sampler against the reference.
E2E_FILES = ("test_default_model", "test_edit", "test_fast_sampler")
JUNIT = "junit-cuda.xml"


def pytest_command(out: str) -> List[str]:
    return [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "tests", "-p", "no:cacheprovider",
            "-o", "junit_family=xunit2", f"--junitxml={os.path.join(out, JUNIT)}", "-rfEs"]


def marker_registered(markers_output: str, name: str = "cuda") -> bool:
    """Whether ``pytest --markers`` lists ``@pytest.mark.<name>`` (else ``-m cuda`` selects silently)."""
    return any(line.startswith(f"@pytest.mark.{name}:") for line in markers_output.splitlines())


def summarize_junit(path: str) -> Dict:
    """Counts over the whole run and over the end-to-end guard files, and the failed test ids."""
    counts = {k: 0 for k in ("tests", "passed", "failed", "skipped")}
    e2e = dict(counts)
    failed: List[str] = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome = "passed"
        if case.find("failure") is not None or case.find("error") is not None:
            outcome = "failed"
            failed.append(f"{case.get('classname')}::{case.get('name')}")
        elif case.find("skipped") is not None:
            outcome = "skipped"
        for c in [counts] + ([e2e] if any(f in (case.get("classname") or "") for f in E2E_FILES) else []):
            c["tests"] += 1
            c[outcome] += 1
    return dict(counts=counts, e2e=e2e, failed=failed)


def run(root: str, out: str, limit_s: float, expect_gpu: bool, cmd: Optional[List[str]] = None) -> StageResult:
    """``cmd`` replaces the pytest command (the rehearsal: it writes the junit XML that pytest would)."""
    markers = run_limited([sys.executable, "-m", "pytest", "--markers", "-p", "no:cacheprovider"], 60, cwd=root)
    if not marker_registered(markers.output):
        return StageResult("tests", FAILED, markers.seconds, limit_s,
                           detail="the pytest marker 'cuda' is not registered: -m cuda would select nothing")
    cmd = cmd or pytest_command(out)
    print(f"[gpu-check] tests: {' '.join(cmd)}", flush=True)
    done = run_limited(cmd, max(0.0, limit_s - markers.seconds), cwd=root, log_path=os.path.join(out, "tests.log"))
    seconds = markers.seconds + done.seconds
    junit = os.path.join(out, JUNIT)
    if done.timed_out or not os.path.exists(junit):
        status = TIMEOUT if done.timed_out else FAILED
        return StageResult("tests", status, seconds, limit_s, detail="no junit XML written", command=" ".join(cmd),
                           log="tests.log", output_tail=tail(done.output))
    try:
        summary = summarize_junit(junit)
    except ET.ParseError as err:  # a junit file cut off or garbled must not stop the run
        return StageResult("tests", FAILED, seconds, limit_s, detail=f"junit XML unreadable: {err}",
                           command=" ".join(cmd), log="tests.log", output_tail=tail(done.output))
    c, e = summary["counts"], summary["e2e"]
    ok = done.returncode == 0 and c["failed"] == 0 and (c["passed"] > 0 or not expect_gpu)
    detail = (f"{c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped of {c['tests']}; "
              f"end-to-end guards {e['passed']} passed, {e['failed']} failed, {e['skipped']} skipped")
    if expect_gpu and c["skipped"]:
        detail += " (a CUDA test that skips on a GPU checks nothing: see tests.log)"
    print(f"[gpu-check] tests: {detail}", flush=True)
    return StageResult("tests", PASSED if ok else FAILED, seconds, limit_s, detail=detail, command=" ".join(cmd),
                       log="tests.log", data=summary, output_tail=[] if ok else tail(done.output))

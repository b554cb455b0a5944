"""Reading the benchmark processes' records and judging a benchmark stage by them (the benchmarks stage and
the Infinity stage)."""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Tuple

from .stage import FAILED, PASSED, TIMEOUT

# implementations that are var_fast's own code: one of them raising fails the run (a baseline that
# refuses a shape is only reported)
OURS = ("var_fast", "fast", "fast float32", "reference", "vqvae decoder", "vqvae decoder, channels-last")
BOOKKEEPING = ("done", "model", "plan", "infinity_model")  # records that are not measurements


def judge_benchmarks(records: List[Dict], returncode: Optional[int]) -> Tuple[str, str]:
    """(status, detail) of the benchmarks stage (and of the Infinity stage). Cases the budget left out do not
    fail it; var_fast's own code raising does, and so does the process dying; a case stopped at the hard limit
    is "out of time"."""
    finished = any(r.get("section") == "done" for r in records)
    measured = sum(1 for r in records if r.get("status") == "ok" and r.get("section") not in BOOKKEEPING)
    left = sum(1 for r in records if r.get("status") == "deadline")
    ours = [r for r in records if r.get("status") == "error" and r.get("impl") in OURS]
    detail = f"{measured} measurements"
    if left:
        detail += f", {left} cases left out by the time budget (listed in the report)"
    if returncode is None:
        return TIMEOUT, detail + "; the case running at the limit was stopped (see benchmarks.log)"
    if not finished or returncode != 0:
        return FAILED, detail + f"; the benchmark process exited with code {returncode} before the end"
    if ours:
        first = ours[0]
        return FAILED, detail + (f"; {len(ours)} of var_fast's cases raised, first {first['section']} "
                                 f"{first['impl']}: {first.get('error', '')[:120]}")
    return PASSED, detail


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

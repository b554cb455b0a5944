"""Time budgets: the whole run's clock, each stage's share of it, and subprocesses that stop at it."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence


class RunClock:
    """The whole run's time limit. A stage gets its nominal budget, but never so much that the stages
    after it lose theirs; the last stage (``nominal=None``) gets whatever is left."""

    def __init__(self, total_s: float, now: Callable[[], float] = time.monotonic):
        self.total_s, self.now = total_s, now
        self.start = now()

    def elapsed(self) -> float:
        return self.now() - self.start

    def remaining(self) -> float:
        return max(0.0, self.total_s - self.elapsed())

    def stage_limit(self, nominal: Optional[float], reserved_after: float = 0.0) -> float:
        left = max(0.0, self.remaining() - reserved_after)
        return left if nominal is None else min(nominal, left)


class Deadline:
    """A point in wall-clock time (epoch seconds, so that a child process can be given it) checked
    between benchmark cases."""

    def __init__(self, at: float, now: Callable[[], float] = time.time):
        self.at, self.now = at, now

    def left(self) -> float:
        return self.at - self.now()

    def passed(self) -> bool:
        return self.left() <= 0

    def allows(self, seconds: float) -> bool:
        """Whether work expected to take ``seconds`` ends before the deadline."""
        return self.left() >= seconds


@dataclass
class Completed:
    returncode: Optional[int]  # None: stopped at the time limit
    seconds: float
    output: str

    @property
    def timed_out(self) -> bool:
        return self.returncode is None


def run_limited(cmd: Sequence[str], limit_s: float, env: Optional[Dict[str, str]] = None, cwd: Optional[str] = None,
                log_path: Optional[str] = None) -> Completed:
    """Run ``cmd`` with stdout+stderr captured (and copied to ``log_path``); kill its whole process
    group at ``limit_s`` (pip/ninja/nvcc and pytest's children too)."""
    start = time.monotonic()
    if limit_s <= 0:
        return Completed(None, 0.0, "not started: no time left in the budget\n")
    proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                            text=True, errors="replace", start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=limit_s)
        code: Optional[int] = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        out += f"\n[gpu-check] stopped at its time limit of {limit_s:.0f} s\n"
        code = None
    if log_path:
        with open(log_path, "w") as f:
            f.write(out)
    return Completed(code, time.monotonic() - start, out)


def tail(text: str, lines: int = 15) -> List[str]:
    return text.rstrip("\n").splitlines()[-lines:]

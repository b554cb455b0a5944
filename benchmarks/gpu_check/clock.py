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

    def __init__(self, total_s: float, now: Callable[[], float] = time.monotonic, start: Optional[float] = None):
        self.total_s, self.now = total_s, now
        self.start = now() if start is None else start

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
                log_path: Optional[str] = None, grace_s: float = 10.0) -> Completed:
    """Run ``cmd`` with stdout+stderr captured (and copied to ``log_path``), ending by ``limit_s``:
    its whole process group (pip/ninja/nvcc, pytest's children) gets SIGINT ``grace_s`` before the
    limit, so that pytest still writes its junit XML of the tests run so far, then SIGKILL at it."""
    start = time.monotonic()
    if limit_s <= 0:
        return Completed(None, 0.0, "not started: no time left in the budget\n")
    soft = limit_s - grace_s if limit_s > 3 * grace_s else limit_s
    # SIGINT back to its default in the child: started from a background job (nohup, `cmd &` in a script)
    # it would inherit "ignored", and pytest would never see the interrupt that lets it write its junit XML
    proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                            text=True, errors="replace", start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        out, _ = proc.communicate(timeout=soft)
        code: Optional[int] = proc.returncode
    except subprocess.TimeoutExpired:
        _signal_group(proc.pid, signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=max(0.1, limit_s - soft))
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        _signal_group(proc.pid, signal.SIGKILL)  # children that outlived their parent
        out += f"\n[gpu-check] stopped at its time limit of {limit_s:.0f} s\n"
        code = None
    if log_path:
        with open(log_path, "w") as f:
            f.write(out)
    return Completed(code, time.monotonic() - start, out)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def tail(text: str, lines: int = 15) -> List[str]:
    return text.rstrip("\n").splitlines()[-lines:]

"""gpu-check's time budgets: the run clock's stage limits, the benchmark deadline, killed subprocesses."""
import sys
import time

from benchmarks.gpu_check.clock import Deadline, RunClock, run_limited
from benchmarks.gpu_check.main import parse_budgets
from benchmarks.gpu_check.timing import measure


class FakeTime:
    def __init__(self, t=100.0):
        self.t = t

    def __call__(self):
        return self.t


def test_stage_gets_its_budget_but_leaves_later_stages_theirs():
    now = FakeTime()
    clock = RunClock(480, now)
    assert clock.stage_limit(150, reserved_after=200) == 150
    now.t += 250  # an earlier stage used 250 s: 230 left, 200 of them promised to later stages
    assert clock.stage_limit(150, reserved_after=200) == 30
    assert clock.stage_limit(None, reserved_after=10) == 220  # the last stage takes the rest
    now.t += 1000
    assert clock.remaining() == 0 and clock.stage_limit(150) == 0


def test_deadline():
    now = FakeTime(1000.0)
    d = Deadline(1010.0, now)
    assert not d.passed() and d.allows(10) and not d.allows(11)
    now.t = 1010.0
    assert d.passed()


def test_subprocess_is_killed_at_its_limit_with_its_children():
    start = time.monotonic()
    # a child that would outlive a plain kill of its parent
    done = run_limited([sys.executable, "-c", "import subprocess, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"],
                       limit_s=1.5)
    assert done.timed_out and done.returncode is None
    assert time.monotonic() - start < 10
    assert "stopped at its time limit" in done.output


def test_subprocess_output_and_exit_code(tmp_path):
    log = tmp_path / "log"
    done = run_limited([sys.executable, "-c", "print('hello'); raise SystemExit(3)"], 30, log_path=str(log))
    assert done.returncode == 3 and not done.timed_out and "hello" in done.output
    assert "hello" in log.read_text()
    assert run_limited(["true"], 0).timed_out  # no time left: not started


def test_measure_shrinks_runs_to_the_deadline():
    calls = []
    slow = lambda: (calls.append(1), time.sleep(0.05))
    m = measure(slow, "cpu", reps=100, warmup=1, deadline=Deadline(time.time() + 0.3))
    assert 1 <= m["runs"] <= 6 and m["median_s"] >= 0.05
    assert len(calls) == m["runs"] + 1


def test_parse_budgets():
    assert parse_budgets("build=90,tests=30", {"build": 150.0, "tests": 110.0, "sanitizers": 80.0}) == \
        {"build": 90.0, "tests": 30.0, "sanitizers": 80.0}
    import pytest
    with pytest.raises(ValueError, match="unknown stage 'bench'"):
        parse_budgets("bench=3", {"build": 1.0})


def test_interrupted_before_the_kill(tmp_path):
    """SIGINT comes first, so pytest can still write its junit XML; the limit itself holds."""
    marker = tmp_path / "interrupted"
    code = (f"import time\ntry:\n    time.sleep(60)\nexcept KeyboardInterrupt:\n"
            f"    open({str(marker)!r}, 'w').write('yes')\n    raise SystemExit(2)\n")
    start = time.monotonic()
    done = run_limited([sys.executable, "-c", code], limit_s=4, grace_s=1)
    assert done.timed_out and marker.read_text() == "yes"
    assert time.monotonic() - start < 4.5


def test_interrupted_even_when_started_with_sigint_ignored(tmp_path):
    """A background job (nohup, `cmd &` in a script, CI) starts with SIGINT ignored, which its children
    inherit: run_limited gives the child SIGINT's default back, so the interrupt still reaches it."""
    import signal
    saved = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        test_interrupted_before_the_kill(tmp_path)
    finally:
        signal.signal(signal.SIGINT, saved)

"""gpu-check's sanitizer stage: command lines, pass/fail parsing per tool, and a driver that calls every op."""
import inspect
import sys

import pytest

from benchmarks.gpu_check import sanitize_driver, sanitizer
from benchmarks.gpu_check.clock import Completed
from benchmarks.gpu_check.stage import FAILED, PASSED, TIMEOUT
from var_fast import ops
from var_fast.native import extension as _ext

CLEAN = f"ok sample_top_k_top_p [x]\n{sanitize_driver.DONE}: 12 ops\n========= ERROR SUMMARY: 0 errors\n"


@pytest.mark.parametrize("tool", sanitizer.TOOLS)
def test_command_line(tool):
    cmd = sanitizer.command(tool, "/cuda/compute-sanitizer", "/py")
    assert cmd[0] == "/cuda/compute-sanitizer"
    assert cmd[cmd.index("--tool") + 1] == tool
    assert cmd[cmd.index("--error-exitcode") + 1] == str(sanitizer.ERROR_EXITCODE) != "0"
    # the sanitizer's own options come before the program, the driver runs on CUDA
    assert cmd[cmd.index("/py"):] == ["/py", "-m", "benchmarks.gpu_check.sanitize_driver", "--device", "cuda"]
    assert max(cmd.index("--tool"), cmd.index("--error-exitcode")) < cmd.index("/py")


def test_memcheck_runs_without_the_caching_allocator():
    assert sanitizer.environment("memcheck", {})["PYTORCH_NO_CUDA_MEMORY_CACHING"] == "1"
    assert "PYTORCH_NO_CUDA_MEMORY_CACHING" not in sanitizer.environment("racecheck", {})


def test_clean_run_passes():
    assert sanitizer.parse("memcheck", CLEAN, 0)["verdict"] == PASSED
    race = CLEAN.replace("ERROR SUMMARY: 0 errors", "RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 warnings)\n"
                                                    "========= ERROR SUMMARY: 0 errors")
    assert sanitizer.parse("racecheck", race, 0)["verdict"] == PASSED


@pytest.mark.parametrize("output,code", [
    (CLEAN.replace("0 errors", "3 errors"), sanitizer.ERROR_EXITCODE),                      # errors reported
    (CLEAN.replace("ERROR SUMMARY: 0 errors", "RACECHECK SUMMARY: 2 hazards displayed (1 error, 1 warning)\n"
                   "========= ERROR SUMMARY: 0 errors"), 0),                                 # hazards, even as warnings
    (CLEAN.replace(sanitize_driver.DONE, "Traceback"), 0),                                  # driver stopped early
    ("========= Error: unrecognized option\n", 1),                                          # no summary at all
    (CLEAN, 1),                                                                             # nonzero exit
])
def test_failures_are_failures(output, code):
    result = sanitizer.parse("racecheck", output, code)
    assert result["verdict"] == FAILED


def test_timeout():
    assert sanitizer.parse("racecheck", "", None)["verdict"] == TIMEOUT


def test_time_left_by_a_fast_tool_carries_on():
    assert sanitizer.tool_limit("memcheck", 100) == pytest.approx(30)
    # memcheck took 10 of its 30: racecheck and synccheck share the 90 left in proportion 0.45 : 0.25
    assert sanitizer.tool_limit("racecheck", 90) == pytest.approx(90 * 0.45 / 0.7)
    assert sanitizer.tool_limit("synccheck", 20) == pytest.approx(20)


def test_driver_covers_every_op_in_var_fast_ops():
    public = {name for name, fn in inspect.getmembers(ops, inspect.isfunction)
              if fn.__module__ == ops.__name__ and not name.startswith("_")}
    cases = list(sanitize_driver.cases("cpu"))  # built, not called
    assert {op for op, _, _ in cases} == public
    words = {word for _, label, _ in cases for word in label.split()}
    for edge in ("V1", "c37", "c64", "head_scale", "float32", "bfloat16", "L1", "B1"):
        assert edge in words, f"no case with {edge!r}"
    assert any(label.endswith("scales 1") for _, label, _ in cases), "no 1x1-only scale case"


@pytest.mark.skipif(not _ext.available(), reason="needs the native extension")
def test_driver_runs_on_the_cpu(capsys):
    assert sanitize_driver.main(["--device", "cpu"]) == 0
    assert sanitize_driver.DONE in capsys.readouterr().out


def test_stage_runs_the_three_tools_into_one_log(monkeypatch, tmp_path):
    seen = []

    def fake_run(cmd, limit_s, env=None, cwd=None, log_path=None):
        seen.append((cmd[cmd.index("--tool") + 1], limit_s, env.get("PYTORCH_NO_CUDA_MEMORY_CACHING")))
        return Completed(0, 5.0, CLEAN)

    monkeypatch.setattr(sanitizer, "run_limited", fake_run)
    result = sanitizer.run("/repo", str(tmp_path), 100.0, sanitizer="/bin/compute-sanitizer")
    assert [tool for tool, _, _ in seen] == list(sanitizer.TOOLS)
    assert seen[0][2] == "1" and seen[1][2] is None  # memcheck without the caching allocator
    assert result.status == PASSED and result.seconds == 15.0
    assert [p.name for p in tmp_path.iterdir()] == [sanitizer.LOG]
    assert (tmp_path / sanitizer.LOG).read_text().count("===== /bin/compute-sanitizer --tool") == 3


def test_stage_fails_when_one_tool_fails(monkeypatch, tmp_path):
    outputs = iter([CLEAN, CLEAN.replace("0 errors", "1 errors"), CLEAN])
    monkeypatch.setattr(sanitizer, "run_limited", lambda cmd, limit_s, env=None, cwd=None: Completed(0, 1.0, next(outputs)))
    result = sanitizer.run("/repo", str(tmp_path), 100.0, sanitizer="cs")
    assert result.status == FAILED and "racecheck failed (1 errors)" in result.detail


def test_an_unknown_option_is_dropped_and_the_tool_rerun(monkeypatch, tmp_path):
    commands = []

    def fake_run(cmd, limit_s, env=None, cwd=None):
        commands.append(cmd)
        if "--report-api-errors" in cmd:
            return Completed(1, 0.5, "========= Error: unrecognized option '--report-api-errors'\n")
        return Completed(0, 1.0, CLEAN)

    monkeypatch.setattr(sanitizer, "run_limited", fake_run)
    result = sanitizer.run("/repo", str(tmp_path), 100.0, sanitizer="cs")
    assert result.status == PASSED
    assert len(commands) == 4 and all("--report-api-errors" not in c for c in commands[1:])

"""gpu-check's sanitizer stage: command lines, pass/fail parsing per tool, and a driver that calls every op."""
import inspect
import os
import sys

import pytest

from benchmarks.gpu_check import sanitize_driver, sanitizer
from benchmarks.gpu_check.rehearsal import RECORDED, player, recorded
from benchmarks.gpu_check.clock import Completed
from benchmarks.gpu_check.stage import FAILED, PASSED, TIMEOUT
from var_fast import ops
from var_fast.native import extension as _ext

# what the sanitize driver prints when it ran every case (the player puts it where a file says @driver)
DRIVER_OUTPUT = f"ok sample_top_k_top_p [B2 L64 V4096 k900 p0.96]\n{sanitize_driver.DONE}: 14 ops\n"
FIXTURES = {tool: player.text(recorded(f"{tool}-clean.txt"), DRIVER_OUTPUT) for tool in sanitizer.TOOLS}
CLEAN = FIXTURES["memcheck"]


def played(name: str, summary_of: str = "memcheck"):
    """(output, exit code) of a recorded file, the driver's output in place; crash.txt and no-summary.txt
    hold memcheck's summary line, turned into ``summary_of``'s."""
    lines, code = player.read(recorded(name))
    text = player.text(recorded(name), DRIVER_OUTPUT)
    if summary_of == "racecheck":
        text = text.replace("ERROR SUMMARY: 0 errors", "RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 warnings)")
    return text, code


@pytest.mark.parametrize("tool", sanitizer.TOOLS)
def test_each_clean_tool_passes_on_its_own_summary_format(tool):
    output, code = played(f"{tool}-clean.txt")
    result = sanitizer.parse(tool, output, code)
    assert result["verdict"] == PASSED and result["findings"] == 0, result
    # racecheck prints no ERROR SUMMARY line: requiring one would fail every clean racecheck
    assert ("ERROR SUMMARY" in output) == (tool != "racecheck")
    assert sanitizer.SUMMARY_LINE[tool] in output


@pytest.mark.parametrize("tool,other", [("racecheck", "memcheck"), ("memcheck", "racecheck"), ("synccheck", "racecheck")])
def test_another_tools_summary_is_not_this_tools(tool, other):
    output, code = played(f"{other}-clean.txt")
    result = sanitizer.parse(tool, output, code)
    assert result["verdict"] == FAILED and "no " + sanitizer.SUMMARY_LINE[tool] in result["reason"]


@pytest.mark.parametrize("tool,name,why", [
    ("memcheck", "memcheck-errors.txt", "2 errors"),
    ("racecheck", "racecheck-hazards.txt", "1 hazards"),
    ("synccheck", "synccheck-errors.txt", "1 errors"),
])
def test_recorded_findings_fail(tool, name, why):
    output, code = played(name)
    assert code == sanitizer.ERROR_EXITCODE
    result = sanitizer.parse(tool, output, code)
    assert result["verdict"] == FAILED and why in result["reason"]


def test_a_race_fails_even_with_exit_code_0_and_only_warnings():
    output, _ = played("racecheck-hazards.txt")
    output = output.replace("(1 error, 0 warnings)", "(0 errors, 1 warning)")
    assert sanitizer.parse("racecheck", output, 0)["verdict"] == FAILED


@pytest.mark.parametrize("tool", sanitizer.TOOLS)
def test_a_crashed_driver_fails_with_a_clean_summary(tool):
    output, code = played("crash.txt", summary_of=tool)
    assert sanitizer.findings(tool, output) == 0 and code == 1
    result = sanitizer.parse(tool, output, code)
    assert result["verdict"] == FAILED and "crashed" in result["reason"]
    # even if the exit code were lost, the tool's own line says the program failed
    assert sanitizer.parse(tool, output, 0)["verdict"] == FAILED


@pytest.mark.parametrize("tool", sanitizer.TOOLS)
def test_no_summary_fails(tool):
    output, code = played("no-summary.txt")
    assert code == 0 and sanitize_driver.DONE in output
    result = sanitizer.parse(tool, output, code)
    assert result["verdict"] == FAILED and "no " + sanitizer.SUMMARY_LINE[tool] in result["reason"]


@pytest.mark.parametrize("output,code", [
    (CLEAN.replace(sanitize_driver.DONE, "Traceback"), 0),                                  # driver stopped early
    ("========= Error: unrecognized option\n", 1),                                          # no summary at all
    (CLEAN, 1),                                                                             # nonzero exit
])
def test_failures_are_failures(output, code):
    result = sanitizer.parse("memcheck", output, code)
    assert result["verdict"] == FAILED


@pytest.mark.parametrize("tool", sanitizer.TOOLS)
def test_timeout(tool):
    assert sanitizer.parse(tool, "", None)["verdict"] == TIMEOUT
    assert sanitizer.parse(tool, FIXTURES[tool], None)["verdict"] == TIMEOUT  # cut off after a clean summary


def test_every_recorded_file_says_where_it_comes_from():
    for name in os.listdir(RECORDED):
        if name.endswith(".txt"):
            with open(os.path.join(RECORDED, name)) as f:
                head = [line for line in f.read().splitlines() if line.startswith("#") and not line.startswith("#!")]
            assert head, f"{name} has no provenance comment"
            if name != "no-summary.txt":
                assert any("https://docs.nvidia.com/compute-sanitizer" in line for line in head), name
            assert any("Not captured on a GPU" in line or "Constructed" in line for line in head), name


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
        return Completed(0, 5.0, FIXTURES[cmd[cmd.index("--tool") + 1]])

    monkeypatch.setattr(sanitizer, "run_limited", fake_run)
    result = sanitizer.run("/repo", str(tmp_path), 100.0, sanitizer="/bin/compute-sanitizer")
    assert [tool for tool, _, _ in seen] == list(sanitizer.TOOLS)
    assert seen[0][2] == "1" and seen[1][2] is None  # memcheck without the caching allocator
    assert result.status == PASSED and result.seconds == 15.0
    assert [p.name for p in tmp_path.iterdir()] == [sanitizer.LOG]
    assert (tmp_path / sanitizer.LOG).read_text().count("===== /bin/compute-sanitizer --tool") == 3


def fake_tools(outputs):
    """run_limited answering each tool with its entry of ``outputs`` {tool: (text, exit code)}."""
    def run(cmd, limit_s, env=None, cwd=None):
        text, code = outputs[cmd[cmd.index("--tool") + 1]]
        return Completed(code, 1.0, text)
    return run


def test_stage_passes_with_each_tools_clean_output(monkeypatch, tmp_path):
    monkeypatch.setattr(sanitizer, "run_limited", fake_tools({t: (FIXTURES[t], 0) for t in sanitizer.TOOLS}))
    result = sanitizer.run("/repo", str(tmp_path), 100.0, sanitizer="cs")
    assert result.status == PASSED, result.detail


def test_stage_fails_when_one_tool_fails(monkeypatch, tmp_path):
    outputs = {t: (FIXTURES[t], 0) for t in sanitizer.TOOLS}
    outputs["racecheck"] = played("racecheck-hazards.txt")
    monkeypatch.setattr(sanitizer, "run_limited", fake_tools(outputs))
    result = sanitizer.run("/repo", str(tmp_path), 100.0, sanitizer="cs")
    assert result.status == FAILED and "racecheck failed (1 hazards)" in result.detail
    assert any("RACECHECK SUMMARY: 1 hazard" in line for line in result.output_tail)


def test_an_unknown_option_is_dropped_and_the_tool_rerun(monkeypatch, tmp_path):
    commands = []

    def fake_run(cmd, limit_s, env=None, cwd=None):
        commands.append(cmd)
        if "--report-api-errors" in cmd:
            return Completed(1, 0.5, "========= Error: unrecognized option '--report-api-errors'\n")
        return Completed(0, 1.0, FIXTURES[cmd[cmd.index("--tool") + 1]])

    monkeypatch.setattr(sanitizer, "run_limited", fake_run)
    result = sanitizer.run("/repo", str(tmp_path), 100.0, sanitizer="cs")
    assert result.status == PASSED
    assert len(commands) == 4 and all("--report-api-errors" not in c for c in commands[1:])


def test_a_tool_that_hangs_is_stopped_at_its_share_and_reported_out_of_time(tmp_path):
    hang = [sys.executable, "-c", "import time; time.sleep(60)"]  # stands where compute-sanitizer would
    result = sanitizer.run(str(tmp_path), str(tmp_path), 3.0, sanitizer=hang)
    assert result.status == TIMEOUT and result.seconds < 10
    assert [t["verdict"] for t in result.data["tools"]] == [TIMEOUT] * 3
    assert "stopped at its time limit" in (tmp_path / sanitizer.LOG).read_text()

"""The rehearsal (``python -m benchmarks.gpu_check --rehearse VARIANT``): gpu-check's own control flow,
subprocesses, time limits, logs and verdicts, with the GPU-only tools played back from recorded outputs.
Here without the benchmarks and Infinity stages (CI's .ci/run runs the whole clean rehearsal, benchmarks
included; tests/test_gpu_check_infinity.py runs the rehearsal's Infinity stage)."""
import json
import sys

import pytest

from benchmarks.gpu_check import main as gpu_check
from benchmarks.gpu_check import rehearsal
from benchmarks.gpu_check.rehearsal import player
from benchmarks.gpu_check.stage import FAILED, PASSED, SKIPPED
from var_fast.native import extension as _ext

needs_ext = pytest.mark.skipif(not _ext.available(), reason="the sanitize driver needs the native extension")


def run(variant, out):
    code = gpu_check.main(["--rehearse", variant, "--out", str(out), "--skip", "benchmarks,infinity"])
    data = json.load(open(out / "report.json"))
    return code, {s["name"]: s for s in data["stages"]}, data


@needs_ext
def test_clean_rehearsal_passes_every_stage(tmp_path):
    code, stages, data = run("clean", tmp_path)
    assert code == 0
    assert [stages[s]["status"] for s in ("build", "tests", "sanitizers")] == [PASSED] * 3
    assert stages["benchmarks"]["status"] == SKIPPED and data["mode"] == "rehearsal"
    assert stages["build"]["data"]["arch"] == rehearsal.ARCH
    assert stages["tests"]["data"]["counts"]["passed"] == 8
    tools = stages["sanitizers"]["data"]["tools"]
    assert [t["tool"] for t in tools] == ["memcheck", "racecheck", "synccheck"]
    assert all(t["driver_finished"] and t["verdict"] == PASSED for t in tools)  # the real driver ran, on the CPU
    log = (tmp_path / "sanitizers.log").read_text()
    assert log.count("gpu-check sanitize driver: all cases ran") == 3
    assert "RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 warnings)" in log
    assert "REHEARSAL" in (tmp_path / "report.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build.log", "junit-cuda.xml", "report.json", "report.md",
                                                          "sanitizers.log", "tests.log"]


@needs_ext
def test_rehearsal_with_racecheck_hazards_fails_the_run(tmp_path):
    code, stages, _ = run("racecheck-hazards", tmp_path)
    assert code == 1
    assert stages["sanitizers"]["status"] == FAILED
    assert "racecheck failed (1 hazards)" in stages["sanitizers"]["detail"]
    assert "memcheck passed" in stages["sanitizers"]["detail"] and "synccheck passed" in stages["sanitizers"]["detail"]
    assert "| sanitizers | failed |" in (tmp_path / "report.md").read_text()


def test_every_variant_plays_a_recorded_file_for_every_tool():
    for variant, files in rehearsal.VARIANTS.items():
        assert set(files) == {"memcheck", "racecheck", "synccheck"}
        for name in files.values():
            player.read(rehearsal.recorded(name))
    with pytest.raises(ValueError, match="unknown rehearsal variant"):
        rehearsal.sanitizer_prefix("nope")


def test_player_reads_the_tool_and_the_program_off_the_sanitizer_command():
    cmd = ["--tool", "racecheck", "--error-exitcode", "86", "--print-limit", "100", "--report-api-errors", "no",
           sys.executable, "-m", "benchmarks.gpu_check.sanitize_driver", "--device", "cuda"]
    tool, program = player.split_tool_command(cmd)
    assert tool == "racecheck" and program[0] == sys.executable
    assert player.on_cpu(program)[-2:] == ["--device", "cpu"]


def test_player_plays_the_recorded_exit_code_and_files(tmp_path, capsys):
    assert player.main(["play", rehearsal.recorded("build.log")]) == 0
    assert "Successfully installed var_fast" in capsys.readouterr().out
    junit = tmp_path / "j.xml"
    player.main(["play", rehearsal.recorded("tests.log"), "--copy", rehearsal.recorded("junit-cuda.xml"), str(junit)])
    assert junit.read_text().count("<testcase ") == 8


def test_player_plays_a_crash_without_running_the_driver(capsys):
    argv = ["sanitizer", "--variant", "crash", "--tool", "memcheck", sys.executable, "-c", "raise SystemExit(5)"]
    assert player.main(argv) == 1  # crash.txt's exit code: the program's, not the driver's
    out = capsys.readouterr().out
    assert "Target application returned an error" in out and "ERROR SUMMARY: 0 errors" in out


def test_a_driver_failing_on_the_cpu_fails_the_clean_rehearsal(capsys):
    argv = ["sanitizer", "--variant", "clean", "--tool", "synccheck", sys.executable, "-c", "raise SystemExit(3)"]
    assert player.main(argv) == 3
    out = capsys.readouterr().out
    assert out.index("Target application returned an error") < out.index("ERROR SUMMARY: 0 errors")

"""gpu-check's stage sequence and budgets, with every stage stubbed (what a CPU can check of a GPU run)."""
import json

import pytest

from benchmarks.gpu_check import main as gpu_check
from benchmarks.gpu_check.stage import FAILED, PASSED, SKIPPED, TIMEOUT, StageResult


@pytest.fixture
def stubs(monkeypatch):
    calls = {}

    def stage(name, status=PASSED):
        def run(*args, **kwargs):
            limit = next(a for a in args if isinstance(a, float))
            calls[name] = limit
            return StageResult(name, status, 1.0, limit)
        return run

    monkeypatch.setattr(gpu_check.build, "run", stage("build"))
    monkeypatch.setattr(gpu_check.cuda_tests, "run", stage("tests"))
    monkeypatch.setattr(gpu_check.sanitizer, "run", stage("sanitizers"))
    monkeypatch.setattr(gpu_check, "benchmarks_stage", lambda args, out, limit, path, cpu: stage("benchmarks")(float(limit)))
    monkeypatch.setattr(gpu_check.infinity_stage, "run",
                        lambda args, out, limit, path, cpu, peak, root: stage("infinity")(float(limit)))
    return calls, stage, monkeypatch


def test_gpu_run_gives_each_stage_its_budget_and_the_rest_to_benchmarks(stubs, tmp_path):
    calls, _, _ = stubs
    assert gpu_check.main(["--out", str(tmp_path), "--total", "480"]) == 0
    assert [calls[s] for s in ("build", "tests", "sanitizers")] == [gpu_check.BUDGETS[s] for s in ("build", "tests", "sanitizers")]
    # the benchmarks leave the Infinity stage (last) its budget; it gets that and what they left (stubs took no time)
    rest = 480 - gpu_check.REPORT_RESERVE_S
    assert rest - gpu_check.BUDGETS["infinity"] - 20 < calls["benchmarks"] <= rest - gpu_check.BUDGETS["infinity"]
    assert rest - 20 < calls["infinity"] <= rest
    data = json.load(open(tmp_path / "report.json"))
    assert [s["name"] for s in data["stages"]] == ["build", "tests", "sanitizers", "benchmarks", "infinity"]
    assert (tmp_path / "report.md").read_text().startswith("## ")


def test_a_short_total_shrinks_the_early_stages_first(stubs, tmp_path):
    calls, _, _ = stubs
    gpu_check.main(["--out", str(tmp_path), "--total", "450"])
    # build may take only what leaves tests, sanitizers, Infinity and the report their budgets
    b = gpu_check.BUDGETS
    assert calls["build"] == pytest.approx(450 - b["tests"] - b["sanitizers"] - b["infinity"] - gpu_check.REPORT_RESERVE_S,
                                           abs=1)


def test_skipping_infinity_gives_its_budget_to_the_benchmarks(stubs, tmp_path):
    calls, _, _ = stubs
    assert gpu_check.main(["--out", str(tmp_path), "--total", "480", "--skip", "infinity"]) == 0
    assert "infinity" not in calls
    assert 460 < calls["benchmarks"] <= 480 - gpu_check.REPORT_RESERVE_S
    stages = {s["name"]: s for s in json.load(open(tmp_path / "report.json"))["stages"]}
    assert stages["infinity"]["status"] == SKIPPED and stages["infinity"]["detail"] == "--skip"


def test_the_default_total_fits_one_command_of_the_gpu_machine():
    # the lent GPU machines run one command for 600 s at most: the whole check, report included, ends before
    assert gpu_check.TOTAL_S <= 580 and gpu_check.parser().parse_args(["--out", "x"]).total == gpu_check.TOTAL_S
    assert sum(gpu_check.BUDGETS.values()) + gpu_check.REPORT_RESERVE_S + 90 <= gpu_check.TOTAL_S  # 90 s of VAR benchmarks


def test_failed_build_skips_tests_and_sanitizers_but_still_reports(stubs, tmp_path):
    calls, stage, monkeypatch = stubs
    monkeypatch.setattr(gpu_check.build, "run", stage("build", FAILED))
    assert gpu_check.main(["--out", str(tmp_path)]) == 1
    assert "tests" not in calls and "sanitizers" not in calls and "benchmarks" in calls
    stages = {s["name"]: s for s in json.load(open(tmp_path / "report.json"))["stages"]}
    assert stages["tests"]["status"] == SKIPPED and stages["tests"]["detail"] == "the build failed"


def test_smoke_mode_neither_builds_nor_sanitizes(stubs, tmp_path):
    calls, _, _ = stubs
    assert gpu_check.main(["--out", str(tmp_path), "--cpu-smoke"]) == 0
    assert set(calls) == {"tests", "benchmarks", "infinity"}
    assert "CPU smoke mode" in (tmp_path / "report.md").read_text()


def test_every_stage_prints_its_time_as_it_ends(stubs, tmp_path, capsys):
    gpu_check.main(["--out", str(tmp_path)])
    out = capsys.readouterr().out
    for name in gpu_check.STAGES:
        assert f"[gpu-check] {name}: passed in 1.0 s" in out


@pytest.mark.parametrize("failing,status,code", [
    ("sanitizers", FAILED, 1), ("tests", TIMEOUT, 1), ("build", TIMEOUT, 1),
    ("benchmarks", FAILED, 1), ("benchmarks", TIMEOUT, 0),  # a benchmark case stopped by the budget is no failure
])
def test_exit_code_says_whether_anything_that_ran_failed(stubs, tmp_path, failing, status, code):
    calls, stage, monkeypatch = stubs
    if failing == "benchmarks":
        monkeypatch.setattr(gpu_check, "benchmarks_stage", lambda args, out, limit, path, cpu: stage("benchmarks", status)(float(limit)))
    else:
        module = {"build": gpu_check.build, "tests": gpu_check.cuda_tests, "sanitizers": gpu_check.sanitizer}[failing]
        monkeypatch.setattr(module, "run", stage(failing, status))
    assert gpu_check.main(["--out", str(tmp_path)]) == code


def rec(kind, impl="var_fast", status="ok", **case):
    return dict(section=kind, impl=impl, status=status, case=case)


DONE = rec("done", "-")


def test_benchmarks_left_out_by_the_budget_do_not_fail():
    records = [rec("sampler", "fast", model="d16", batch=1), rec("left_out", "-", "deadline", section="sampler", model="d36"),
               rec("sampler", "reference", "deadline", model="d30", batch=64), DONE]
    status, detail = gpu_check.judge_benchmarks(records, 0)
    assert status == PASSED and "2 cases left out by the time budget" in detail


@pytest.mark.parametrize("records,code,why", [
    ([rec("sampler", "fast", "error", error="RuntimeError: boom"), DONE], 0, "raised"),   # ours raised
    ([rec("attention", "var_fast", "error", error="x"), DONE], 0, "raised"),
    ([rec("sampler", "fast")], 1, "exited with code 1"),                                   # the process died
    ([rec("sampler", "fast")], 0, "before the end"),                                       # no "done" line
])
def test_benchmarks_failures(records, code, why):
    status, detail = gpu_check.judge_benchmarks(records, code)
    assert status == FAILED and why in detail


def test_a_baseline_that_refuses_a_shape_does_not_fail():
    records = [rec("attention", "sdpa cudnn", "error", error="no kernel"), rec("sampler", "upstream", "error"), DONE]
    assert gpu_check.judge_benchmarks(records, 0)[0] == PASSED


def test_benchmarks_stopped_at_the_hard_limit_are_out_of_time():
    assert gpu_check.judge_benchmarks([rec("sampler", "fast")], None)[0] == TIMEOUT


def test_the_child_stops_before_the_limit_interrupts_it():
    # the child's deadline comes before run_limited's SIGINT, which comes before its SIGKILL
    assert gpu_check.BENCH_STOP_S > gpu_check.BENCH_GRACE_S > 0

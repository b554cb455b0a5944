"""gpu-check's stage sequence and budgets, with every stage stubbed (what a CPU can check of a GPU run)."""
import json

import pytest

from benchmarks.gpu_check import main as gpu_check
from benchmarks.gpu_check.stage import FAILED, PASSED, SKIPPED, StageResult


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
    monkeypatch.setattr(gpu_check, "benchmarks_stage", lambda args, out, limit, path: stage("benchmarks")(float(limit)))
    return calls, stage, monkeypatch


def test_gpu_run_gives_each_stage_its_budget_and_the_rest_to_benchmarks(stubs, tmp_path):
    calls, _, _ = stubs
    assert gpu_check.main(["--out", str(tmp_path), "--total", "480"]) == 0
    assert calls["build"] == 120 and calls["tests"] == 100 and calls["sanitizers"] == 100
    assert 460 < calls["benchmarks"] <= 480 - gpu_check.REPORT_RESERVE_S  # stubs took no time
    data = json.load(open(tmp_path / "report.json"))
    assert [s["name"] for s in data["stages"]] == ["build", "tests", "sanitizers", "benchmarks"]
    assert (tmp_path / "report.md").read_text().startswith("## ")


def test_a_short_total_shrinks_the_early_stages_first(stubs, tmp_path):
    calls, _, _ = stubs
    gpu_check.main(["--out", str(tmp_path), "--total", "250"])
    # build may take only what leaves tests, sanitizers and the report their budgets
    assert calls["build"] == pytest.approx(250 - 100 - 100 - gpu_check.REPORT_RESERVE_S, abs=1)


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
    assert set(calls) == {"tests", "benchmarks"}
    assert "CPU smoke mode" in (tmp_path / "report.md").read_text()

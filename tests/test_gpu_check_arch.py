"""gpu-check's build stage: the present GPU's arch only, all cores, the editable in-place install."""
import pytest
import torch

from benchmarks.gpu_check import arch, build
from benchmarks.gpu_check.clock import Completed
from benchmarks.gpu_check.stage import PASSED, SKIPPED, TIMEOUT


@pytest.fixture
def fake_gpu(monkeypatch):
    def install(capability):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=0: capability)
    return install


@pytest.mark.parametrize("capability,expected", [((9, 0), "9.0"), ((8, 6), "8.6"), ((12, 0), "12.0")])
def test_arch_list_is_the_present_gpu(fake_gpu, capability, expected):
    fake_gpu(capability)
    assert arch.arch_list() == expected


def test_no_gpu_no_arch(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert arch.arch_list() is None
    assert build.run(".", ".", 100).status == SKIPPED


def test_build_env_overrides_the_callers():
    env = arch.build_env({"TORCH_CUDA_ARCH_LIST": "8.0;8.6;8.9;9.0", "MAX_JOBS": "2", "PATH": "/bin"}, "9.0", 16)
    assert env["TORCH_CUDA_ARCH_LIST"] == "9.0" and env["MAX_JOBS"] == "16" and env["VAR_FAST_CUDA"] == "1"
    assert env["PATH"] == "/bin"


@pytest.mark.parametrize("returncode,status", [(0, PASSED), (None, TIMEOUT)])
def test_build_runs_pip_editable_for_the_one_arch(fake_gpu, monkeypatch, tmp_path, returncode, status):
    fake_gpu((9, 0))
    monkeypatch.setattr(build.os, "cpu_count", lambda: 16)
    seen = {}

    def fake_run(cmd, limit_s, env=None, cwd=None, log_path=None):
        seen.update(cmd=cmd, limit_s=limit_s, env=env, cwd=cwd)
        return Completed(returncode, 42.0, "ninja output")

    monkeypatch.setattr(build, "run_limited", fake_run)
    result = build.run("/repo", str(tmp_path), 150)
    assert seen["cmd"][1:] == ["-m", "pip", "install", "--no-build-isolation", "--no-deps", "-e", "."]
    assert seen["env"]["TORCH_CUDA_ARCH_LIST"] == "9.0" and seen["env"]["MAX_JOBS"] == "16"
    assert seen["cwd"] == "/repo" and seen["limit_s"] == 150
    assert result.status == status and result.seconds == 42.0 and "TORCH_CUDA_ARCH_LIST=9.0" in result.command

"""Stage 1: build the extension in place for the present GPU's arch only."""
from __future__ import annotations

import os
import shlex
import sys
from typing import List, Optional

from .arch import arch_list, build_env
from .clock import run_limited, tail
from .stage import FAILED, PASSED, SKIPPED, TIMEOUT, StageResult

BUILD_CMD = [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "-e", "."]


def run(root: str, out: str, limit_s: float, arch: Optional[str] = None, cmd: Optional[List[str]] = None) -> StageResult:
    """``arch`` and ``cmd`` replace the present GPU's arch and pip's command (the rehearsal)."""
    arch = arch or arch_list()
    if arch is None:
        return StageResult("build", SKIPPED, budget_s=limit_s, detail="no CUDA GPU: nothing to build for")
    cores = os.cpu_count() or 1
    env = build_env(os.environ, arch, cores)
    cmd = cmd or BUILD_CMD
    command = f"TORCH_CUDA_ARCH_LIST={arch} MAX_JOBS={cores} VAR_FAST_CUDA=1 " + shlex.join(cmd)
    print(f"[gpu-check] build: {command}", flush=True)
    done = run_limited(cmd, limit_s, env=env, cwd=root, log_path=os.path.join(out, "build.log"))
    status = TIMEOUT if done.timed_out else PASSED if done.returncode == 0 else FAILED
    return StageResult("build", status, done.seconds, limit_s, detail=f"arch {arch}, {cores} jobs",
                       command=command, log="build.log", data=dict(arch=arch, jobs=cores),
                       output_tail=[] if status == PASSED else tail(done.output))

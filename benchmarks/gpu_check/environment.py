"""What the report's header says about the machine and the code: date, GPU, driver, torch, commit."""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
from typing import Dict

import torch


def _run(cmd, cwd=None) -> str:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def describe(root: str) -> Dict[str, str]:
    info = dict(date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                python=platform.python_version(), torch=torch.__version__, cuda=str(torch.version.cuda),
                cpu=platform.processor() or platform.machine(), cores=str(os.cpu_count()))
    commit = _run(["git", "rev-parse", "--short", "HEAD"], cwd=root)
    dirty = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root)
    info["commit"] = (commit + (" (with uncommitted changes)" if dirty else "")) if commit else "unknown"
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        major, minor = torch.cuda.get_device_capability(0)
        info["capability"] = f"{major}.{minor}"
        info["gpu_memory_gib"] = f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f}"
        lines = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]).splitlines()
        info["driver"] = lines[0] if lines else "unknown"
    else:
        info["gpu"] = "none (CPU)"
        info["driver"] = "-"
    return info

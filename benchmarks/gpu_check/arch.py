"""The build's TORCH_CUDA_ARCH_LIST: the present GPU's compute capability only (one arch builds in
about a minute on 16 cores; setup.py's default of four takes several times longer)."""
from __future__ import annotations

from typing import Optional

import torch


def arch_list(device: int = 0) -> Optional[str]:
    """"9.0" for an H100/H200, "8.6" for an RTX 3090, ...; None without a CUDA GPU."""
    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(device)
    return f"{major}.{minor}"


def build_env(base: dict, arch: str, cores: int) -> dict:
    """The environment of the extension build: the one arch, all cores, CUDA kernels required."""
    env = dict(base)
    env.update(TORCH_CUDA_ARCH_LIST=arch, MAX_JOBS=str(max(1, cores)), VAR_FAST_CUDA="1")
    return env

"""The rehearsal: gpu-check's whole control flow on the CPU, with the GPU-only tools (the CUDA build,
``pytest -m cuda`` on a GPU, compute-sanitizer) replaced by the recorded outputs in ``recorded/``,
played back by ``player.py`` through the same subprocess, time-limit, log and parsing code as a real
run. The sanitize driver and the benchmarks run for real, on the CPU with tiny shapes.

    python -m benchmarks.gpu_check --rehearse clean --out DIR              # exits 0
    python -m benchmarks.gpu_check --rehearse racecheck-hazards --out DIR  # a failing racecheck: exits 1
"""
from __future__ import annotations

import os
import sys
from typing import Dict, List

RECORDED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "recorded")
ARCH = "9.0"  # what the rehearsal's build stage pretends the GPU is (an H100/H200)
# the benchmarks child on the CPU: two tiny models, so that the headline cases and "the rest" both exist
MODELS, BATCHES, HEADLINE = "tiny,tiny2", "1", "tiny:1"

_CLEAN = {"memcheck": "memcheck-clean.txt", "racecheck": "racecheck-clean.txt", "synccheck": "synccheck-clean.txt"}
# variant -> the recorded output each sanitizer tool plays; every failure form once
VARIANTS: Dict[str, Dict[str, str]] = {
    "clean": dict(_CLEAN),
    "racecheck-hazards": dict(_CLEAN, racecheck="racecheck-hazards.txt"),
    "memcheck-errors": dict(_CLEAN, memcheck="memcheck-errors.txt"),
    "synccheck-errors": dict(_CLEAN, synccheck="synccheck-errors.txt"),
    "crash": dict(_CLEAN, memcheck="crash.txt"),
    "no-summary": dict(_CLEAN, racecheck="no-summary.txt"),
}


def recorded(name: str) -> str:
    return os.path.join(RECORDED, name)


def _player(*args: str) -> List[str]:
    return [sys.executable, "-m", "benchmarks.gpu_check.rehearsal.player", *args]


def build_command() -> List[str]:
    return _player("play", recorded("build.log"))


def tests_command(junit_path: str) -> List[str]:
    return _player("play", recorded("tests.log"), "--copy", recorded("junit-cuda.xml"), junit_path)


def sanitizer_prefix(variant: str) -> List[str]:
    """Stands where the compute-sanitizer executable would: the tool's options and the driver follow."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown rehearsal variant {variant!r}; choose from {', '.join(VARIANTS)}")
    return _player("sanitizer", "--variant", variant)

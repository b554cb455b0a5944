"""The three builds of emulated kernels the sanitizer checks use, and the environment each runs in.

TSan and ASan are loaded into standalone executables only (preloading them into Python segfaults here).
Every mode's environment makes a sanitizer report fatal with exit code 66, so a run passes only when
nothing was reported.
"""
from __future__ import annotations

from dataclasses import dataclass, field

REPORT_EXIT_CODE = 66


@dataclass(frozen=True)
class Mode:
    name: str
    cflags: list[str]  # compile and link flags
    env: dict[str, str] = field(default_factory=dict)


MODES = {
    "plain": Mode("plain", ["-O1", "-g"]),
    # OMP_NUM_THREADS=1: libgomp (torch's CPU ops) is not instrumented, its threads would show as races.
    "tsan": Mode("tsan", ["-O1", "-g", "-fsanitize=thread"],
                 {"TSAN_OPTIONS": f"halt_on_error=1:exitcode={REPORT_EXIT_CODE}", "OMP_NUM_THREADS": "1"}),
    # detect_leaks=0: a failed launch abandons its fibers' stacks, and libtorch keeps registries alive.
    "asan": Mode("asan", ["-O1", "-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer",
                          "-fno-sanitize-recover=undefined"],
                 {"ASAN_OPTIONS": f"halt_on_error=1:exitcode={REPORT_EXIT_CODE}:detect_leaks=0",
                  "UBSAN_OPTIONS": f"halt_on_error=1:print_stacktrace=1:exitcode={REPORT_EXIT_CODE}",
                  "OMP_NUM_THREADS": "1"}),
}

# Thread / block orders of the emulator between synchronisation points (CUEMU_SCHED).
THREAD_ORDERS = ["fwd", "rev", "rand:1"]

"""The CUDA emulator's own tests: broken kernels (tests/emu/selftest/broken_kernels.cpp) must fail with a
message naming their fault, in a plain, a ThreadSanitizer and an AddressSanitizer+UBSan build; a correct
kernel must pass in all three builds and every thread order.

The program is torch-free (-DCUEMU_NO_TORCH) and built into build/emu-selftest/ when its sources are
newer than the executable. Without g++ or the CUDA headers the tests skip, unless
VAR_FAST_REQUIRE_EXTENSION=1, where they fail.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from emu import build as emu_build
from emu.sanitizer_modes import MODES, REPORT_EXIT_CODE, THREAD_ORDERS

pytestmark = pytest.mark.emu

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "selftest", "broken_kernels.cpp")
SHIM = os.path.join(emu_build.CUEMU, "cuda_emu.h")
OUT_DIR = os.path.join(emu_build.ROOT, "build", "emu-selftest")
REQUIRE = os.environ.get("VAR_FAST_REQUIRE_EXTENSION") == "1"
# The emulated build's language flags, without its optimisation level (each mode sets its own).
SHIM_FLAGS = [f for f in emu_build.EMU_FLAGS if not f.startswith("-O") and f != "-DVAR_FAST_EMULATED"]


def _unavailable(reason: str):
    if REQUIRE:
        pytest.fail(f"VAR_FAST_REQUIRE_EXTENSION=1: {reason}")
    pytest.skip(reason)


def _newest_input_mtime() -> float:
    inputs = [SOURCE, SHIM, os.path.join(emu_build.CUEMU, "include", "mma.h"), os.path.join(HERE, "sanitizer_modes.py")]
    return max(os.path.getmtime(p) for p in inputs)


def build_program(mode_name: str) -> tuple[str, str]:
    """(mode, path) of broken_kernels built in that mode (built when missing or older than its sources)."""
    mode = MODES[mode_name]
    if shutil.which("g++") is None:
        _unavailable("g++ is not on PATH")
    cuda_inc = emu_build.cuda_include_dir()
    if cuda_inc is None:
        _unavailable("the CUDA toolkit's headers (cuda_runtime.h) are not found; set CUDA_HOME")
    os.makedirs(OUT_DIR, exist_ok=True)
    exe = os.path.join(OUT_DIR, f"broken_kernels-{mode.name}")
    if not os.path.exists(exe) or os.path.getmtime(exe) < _newest_input_mtime():
        cmd = ["g++", *SHIM_FLAGS, *mode.cflags, "-DCUEMU_NO_TORCH", "-include", SHIM,
               "-I", os.path.join(emu_build.CUEMU, "include"), "-I", cuda_inc, SOURCE, "-o", exe + ".tmp"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        assert done.returncode == 0, f"building broken_kernels ({mode.name}) failed:\n{done.stderr[-4000:]}"
        os.replace(exe + ".tmp", exe)
    return mode.name, exe


@pytest.fixture(scope="session", params=list(MODES))
def program(request) -> tuple[str, str]:
    return build_program(request.param)


@pytest.fixture(scope="session")
def tsan_program() -> tuple[str, str]:
    return build_program("tsan")


def run_case(program, case: str, order: str = "fwd", **env_overrides) -> subprocess.CompletedProcess:
    mode, exe = program
    env = {**os.environ, **MODES[mode].env, "CUEMU_SCHED": order, **env_overrides}
    return subprocess.run([exe, case], capture_output=True, text=True, env=env, timeout=300)


def source_lines(kernel: str, needle: str) -> list[int]:
    """Line numbers of `needle` inside the body of `kernel` in broken_kernels.cpp."""
    lines = open(SOURCE).read().splitlines()
    start = next(i for i, line in enumerate(lines) if f"void {kernel}(" in line)
    end = next(i for i in range(start, len(lines)) if lines[i] == "}")
    return [i + 1 for i in range(start, end) if needle in lines[i]]


def assert_failed_without_sanitizer_report(done: subprocess.CompletedProcess) -> str:
    """The launch failed (exit 1) and no sanitizer complained about the emulator's error path."""
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "Sanitizer" not in out and "runtime error" not in out, out
    return done.stdout


def test_divergent_barrier_names_both_lines(program):
    out = assert_failed_without_sanitizer_report(run_case(program, "divergent_barrier"))
    m = re.search(r"divergent barrier: __syncthreads at broken_kernels\.cpp:(\d+):\d+ "
                  r"while other threads wait in __syncthreads at broken_kernels\.cpp:(\d+):\d+", out)
    assert m, out
    assert sorted({int(m[1]), int(m[2])}) == source_lines("divergent_barrier_kernel", "__syncthreads()"), out


def test_shuffle_naming_an_exited_lane_fails(program):
    for order in THREAD_ORDERS:
        out = assert_failed_without_sanitizer_report(run_case(program, "shuffle_after_exit", order))
        line = source_lines("shuffle_after_exit_kernel", "__shfl_down_sync")[0]
        assert f"__shfl_down_sync at broken_kernels.cpp:{line}:" in out, (order, out)
        assert "mask names lanes that have already exited" in out, (order, out)


def test_dynamic_shared_memory_above_48k_needs_the_opt_in(program):
    out = assert_failed_without_sanitizer_report(run_case(program, "smem_without_optin"))
    assert "dynamic shared memory 65536 > 49152" in out and "cudaFuncSetAttribute missing" in out, out
    done = run_case(program, "smem_with_optin")
    assert done.returncode == 0 and "smem_with_optin: launch succeeded" in done.stdout, done.stdout + done.stderr


def test_deadlock_names_where_each_thread_waits(program):
    out = assert_failed_without_sanitizer_report(run_case(program, "deadlock"))
    shfl = source_lines("deadlock_kernel", "__shfl_sync")[0]
    bar = source_lines("deadlock_kernel", "__syncthreads()")[0]
    assert "deadlock in block (0,0,0)" in out, out
    assert f"__shfl_sync at broken_kernels.cpp:{shfl}:" in out and f"__syncthreads at broken_kernels.cpp:{bar}:" in out, out


def test_missing_syncthreads_is_a_data_race_on_shared_memory(tsan_program):
    """Only ThreadSanitizer sees this race: the emulated threads never overlap in time."""
    # Not halt_on_error: the program goes on to print where the kernel's __shared__ array is.
    done = run_case(tsan_program, "missing_syncthreads", TSAN_OPTIONS=f"exitcode={REPORT_EXIT_CODE}")
    report = done.stderr
    assert done.returncode == REPORT_EXIT_CODE, done.stdout + report
    assert "ThreadSanitizer: data race" in report, report
    first = report.split("ThreadSanitizer: data race", 1)[1]
    now = re.search(r"(Write|Read) of size 4 at (0x[0-9a-f]+) by thread T(\d+)", first)
    before = re.search(r"Previous (write|read) of size 4 at (0x[0-9a-f]+) by thread T(\d+)", first)
    assert now and before, report
    shared = re.search(r"shared array: \[(0x[0-9a-f]+), (0x[0-9a-f]+)\)", done.stdout)
    assert shared, done.stdout
    lo, hi = int(shared[1], 16), int(shared[2], 16)
    assert now[2] == before[2] and lo <= int(now[2], 16) < hi, (shared[0], report)  # one word of the shared array
    assert now[3] != before[3], report  # touched by two different CUDA threads (fibers)
    assert "missing_syncthreads_kernel" in first.split("SUMMARY", 1)[0], report


def test_out_of_bounds_global_write_is_reported(program):
    mode, _ = program
    done = run_case(program, "out_of_bounds_write")
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    if mode == "asan":
        assert "AddressSanitizer: heap-buffer-overflow" in out and "WRITE of size 4" in out, out
        assert "write_n_kernel" in out, out
    else:  # the guard element past the buffer
        assert "global write past the end of the buffer (guard element 99 overwritten)" in out, out


@pytest.mark.parametrize("order", THREAD_ORDERS)
def test_correct_kernel_passes_without_any_report(program, order):
    mode, _ = program
    # The positive control leaks nothing: leak checking stays on for it.
    extra = {"ASAN_OPTIONS": f"halt_on_error=1:exitcode={REPORT_EXIT_CODE}:detect_leaks=1"} if mode == "asan" else {}
    done = run_case(program, "correct_reduction", order, **extra)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "correct_reduction: launch succeeded", done.stdout
    assert done.stderr == "", done.stderr  # no sanitizer report, no emulator warning

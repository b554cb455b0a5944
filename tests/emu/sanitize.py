"""`make emu-sanitize`: var_fast's CUDA kernels under ThreadSanitizer and AddressSanitizer+UBSan, on the CPU.

1. builds the emulated library (tests/emu/build.py) for its plain launcher and registration objects;
2. compiles the kernel translation units csrc/cuda/*_kernels.cu with the emulator (the same generated
   wrappers as build.py) once per sanitizer, into build/emu-tsan/ and build/emu-asan/;
3. links each set with the plain launchers, emu_library.o, the driver tests/emu/sanitize/quick_cases.cpp
   and libtorch into a standalone executable (TSan cannot be preloaded into Python here);
4. runs each executable in three thread orders (CUEMU_SCHED=fwd, rev, rand:1); any sanitizer report,
   emulator error or failed check fails the run, and so do results that differ between orders or builds.

    python tests/emu/sanitize.py [--modes tsan,asan] [--orders fwd,rev,rand:1] [--filter SUBSTRING[,SUBSTRING...]]

Compilation is incremental (g++ dependency files); exit status 0 only when every run passed.
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tests/: `emu` is a package there

from emu import build as emu_build  # noqa: E402
from emu.sanitizer_modes import MODES, THREAD_ORDERS  # noqa: E402

ROOT = emu_build.ROOT
DRIVER = os.path.join(HERE, "sanitize", "quick_cases.cpp")
RUN_TIMEOUT_S = 600
JOBS = 2  # the machine's cores are shared


def torch_dir() -> str:
    import torch
    return os.path.dirname(torch.__file__)


def include_flags(cuda_inc: str) -> list[str]:
    # As build.py: cuemu/include first (it shadows <mma.h>), then the shim, the project, CUDA, torch.
    tdir = torch_dir()
    return ["-I", os.path.join(emu_build.CUEMU, "include"), "-I", emu_build.CUEMU, "-I", os.path.join(ROOT, "csrc", "include"),
            "-I", cuda_inc, "-isystem", os.path.join(tdir, "include"),
            "-isystem", os.path.join(tdir, "include", "torch", "csrc", "api", "include")]


def up_to_date(obj: str, extra_inputs: list[str]) -> bool:
    """The object exists and is newer than every file its g++ dependency file (obj.d) names."""
    dep = obj + ".d"
    if not (os.path.exists(obj) and os.path.exists(dep)):
        return False
    text = open(dep).read().replace("\\\n", " ")
    inputs = text.split(":", 1)[1].split() + extra_inputs
    newest = max((os.path.getmtime(p) for p in inputs if os.path.exists(p)), default=0.0)
    return all(os.path.exists(p) for p in inputs) and os.path.getmtime(obj) >= newest


def compile_all(jobs: list[tuple[str, str, list[str]]]) -> None:
    """Compiles (source, object, flags) jobs that are out of date, JOBS at a time."""
    flags_file = os.path.join(HERE, "sanitizer_modes.py")  # a change of mode flags rebuilds
    todo = [j for j in jobs if not up_to_date(j[1], [flags_file])]

    def one(job):
        src, obj, flags = job
        os.makedirs(os.path.dirname(obj), exist_ok=True)
        t0 = time.monotonic()
        done = subprocess.run(["g++", *flags, "-MMD", "-MF", obj + ".d", "-c", src, "-o", obj],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"compiling {src} failed:\n{done.stderr[-6000:]}")
        print(f"  compiled {os.path.relpath(obj, ROOT)} ({time.monotonic() - t0:.0f}s)", flush=True)

    with ThreadPoolExecutor(JOBS) as pool:
        list(pool.map(one, todo))


def build_executables(modes: list[str]) -> dict[str, str]:
    """mode -> path of quick_cases linked with that mode's sanitized kernels."""
    t0 = time.monotonic()
    emu_build.build()  # the plain launchers and emu_library.o in build/emu
    plain_dir = os.path.join(ROOT, "build", "emu")
    cuda_inc = emu_build.cuda_include_dir()
    includes = include_flags(cuda_inc)
    shim_flags = [f for f in emu_build.EMU_FLAGS if not f.startswith("-O")]
    kernel_tus = sorted(glob.glob(os.path.join(plain_dir, "src", "*_kernels.cpp")))  # build.py's wrappers
    assert len(kernel_tus) == len(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*_kernels.cu"))), kernel_tus

    driver_obj = os.path.join(ROOT, "build", "emu-sanitize", "quick_cases.o")
    jobs = [(DRIVER, driver_obj, ["-std=c++20", "-O1", "-g", *includes])]
    for mode in modes:
        out_dir = os.path.join(ROOT, "build", f"emu-{mode}")
        for tu in kernel_tus:
            obj = os.path.join(out_dir, os.path.basename(tu)[:-4] + ".o")
            jobs.append((tu, obj, [*shim_flags, *MODES[mode].cflags, *includes]))
    compile_all(jobs)

    plain_objs = sorted(glob.glob(os.path.join(plain_dir, "launcher_*.o"))) + [os.path.join(plain_dir, "emu_library.o")]
    tlib = os.path.join(torch_dir(), "lib")
    exes = {}
    for mode in modes:
        out_dir = os.path.join(ROOT, "build", f"emu-{mode}")
        kernel_objs = [os.path.join(out_dir, os.path.basename(tu)[:-4] + ".o") for tu in kernel_tus]
        exe = os.path.join(out_dir, "quick_cases")
        inputs = kernel_objs + plain_objs + [driver_obj]
        if not os.path.exists(exe) or os.path.getmtime(exe) < max(os.path.getmtime(p) for p in inputs):
            # The objects themselves (not an archive): their static op registrations stay in.
            cmd = ["g++", *MODES[mode].cflags, *inputs, "-o", exe, f"-L{tlib}", f"-Wl,-rpath,{tlib}",
                   "-Wl,--no-as-needed", "-ltorch_cpu", "-lc10"]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"linking {exe} failed:\n{done.stderr[-6000:]}")
        exes[mode] = exe
    print(f"build: {time.monotonic() - t0:.0f}s", flush=True)
    return exes


CASE_LINE = re.compile(r"^case (\S+) checksum=([0-9a-f]{16}) seconds=")


def run_one(exe: str, mode: str, order: str, case_filter: str) -> tuple[bool, dict[str, str]]:
    """Runs the driver; returns (passed, case -> checksum) and prints one summary line."""
    env = {**os.environ, **MODES[mode].env, "CUEMU_SCHED": order}
    t0 = time.monotonic()
    try:
        done = subprocess.run([exe, case_filter], capture_output=True, text=True, env=env, timeout=RUN_TIMEOUT_S)
        rc, stdout, stderr = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as err:
        rc, stdout, stderr = "timeout", err.stdout or "", err.stderr or ""
        stdout, stderr = (s.decode() if isinstance(s, bytes) else s for s in (stdout, stderr))
    seconds = time.monotonic() - t0
    sums = {m[1]: m[2] for m in map(CASE_LINE.match, stdout.splitlines()) if m}
    passed = rc == 0
    print(f"{mode:5s} {order:7s} {len(sums):3d} cases {seconds:7.1f}s  {'ok' if passed else f'FAILED (exit {rc})'}",
          flush=True)
    if not passed:
        failures = [line for line in stdout.splitlines() if line.startswith("FAILED")]
        print("\n".join(failures), stderr[-8000:], sep="\n", flush=True)
    return passed, sums


def differing_cases(runs: dict[tuple[str, str], dict[str, str]]) -> list[str]:
    """Cases whose checksum is not the same in every run that reported it."""
    by_case: dict[str, dict[str, str]] = {}
    for (mode, order), sums in runs.items():
        for case, s in sums.items():
            by_case.setdefault(case, {})[f"{mode}/{order}"] = s
    return [f"{case}: {seen}" for case, seen in sorted(by_case.items()) if len(set(seen.values())) > 1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modes", default="tsan,asan", help="comma-separated: tsan, asan")
    ap.add_argument("--orders", default=",".join(THREAD_ORDERS), help="CUEMU_SCHED values, comma-separated")
    ap.add_argument("--filter", default="", help="run only the cases whose name contains this (or one of these, comma-separated)")
    args = ap.parse_args(argv)
    modes = args.modes.split(",")
    assert all(m in MODES and m != "plain" for m in modes), modes

    t0 = time.monotonic()
    try:
        exes = build_executables(modes)
    except RuntimeError as err:  # a compile or link error: its compiler output, no traceback
        print(f"emu-sanitize: FAILED to build: {err}", flush=True)
        return 1
    ok = True
    runs = {}
    for mode in modes:
        for order in args.orders.split(","):
            passed, runs[(mode, order)] = run_one(exes[mode], mode, order, args.filter)
            ok = ok and passed
    counts = {len(s) for s in runs.values()}
    if len(counts) != 1:
        print(f"FAILED: the runs completed different numbers of cases: { {k: len(v) for k, v in runs.items()} }")
        ok = False
    differ = differing_cases(runs)
    if differ:
        print("FAILED: results differ between thread orders / builds:\n  " + "\n  ".join(differ))
        ok = False
    print(f"emu-sanitize: {'passed' if ok else 'FAILED'} in {time.monotonic() - t0:.0f}s", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

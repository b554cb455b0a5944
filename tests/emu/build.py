"""Builds var_fast's CUDA sources for the CPU, through the CUDA execution-model emulator (cuemu/), as a
torch operator library `var_fast_emu` (CPU tensors, the same schemas as `var_fast`).

The sources are the project's own: every kernel translation unit csrc/cuda/*_kernels.cu is compiled
by g++ with cuemu/cuda_emu.h included first, every torch-facing launcher csrc/cuda/*.cpp with
VAR_FAST_EMULATED (CPU tensors, no streams). Nothing here re-implements a launcher.

    python tests/emu/build.py            # build (incremental) into build/emu and print the library path

Test infrastructure only: the library is never part of the installed package.
"""
from __future__ import annotations

import glob
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.dirname(os.path.abspath(__file__))
CUEMU = os.path.join(HERE, "cuemu")
NAME = "var_fast_emu"

# g++ flags of the emulated build: thread-local built-in indices without TLS wrappers, no type-based
# aliasing assumptions (kernels reinterpret shared memory), and no FMA contraction (nvcc contracts
# a * b + c, so explicit-rounding code must not be contracted here either).
EMU_FLAGS = ["-O2", "-std=c++20", "-DVAR_FAST_EMULATED", "-fno-extern-tls-init", "-fno-strict-aliasing",
             "-ffp-contract=off", "-Wno-unused-function"]


def cuda_include_dir() -> str | None:
    """The CUDA toolkit's include folder (cuda_runtime.h, cuda_fp16.h: the emulator uses their host parts)."""
    sys.path.insert(0, ROOT)
    try:
        from setup import locate_cuda_home
    finally:
        sys.path.pop(0)
    locate_cuda_home()
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    inc = os.path.join(home, "include")
    return inc if os.path.isfile(os.path.join(inc, "cuda_runtime.h")) else None


def write_sources(src_dir: str) -> list[str]:
    """One small wrapper per project source (the emulator header before each kernel TU)."""
    os.makedirs(src_dir, exist_ok=True)
    sources = []

    def wrapper(name: str, text: str) -> None:
        path = os.path.join(src_dir, name)
        if not os.path.exists(path) or open(path).read() != text:
            with open(path, "w") as f:
                f.write(text)
        sources.append(path)

    for kernel_tu in sorted(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*_kernels.cu"))):
        stem = os.path.splitext(os.path.basename(kernel_tu))[0]
        wrapper(f"{stem}.cpp", f'#include "cuda_emu.h"\n#include "{kernel_tu}"\n')
    for launcher in sorted(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cpp"))):
        stem = os.path.splitext(os.path.basename(launcher))[0]
        wrapper(f"launcher_{stem}.cpp", f'#include "{launcher}"\n')
    sources.append(os.path.join(HERE, "emu_library.cpp"))
    return sources


def build(build_dir: str | None = None, verbose: bool = False) -> str:
    """Builds (incrementally) and loads the emulated library into this process; returns its path."""
    import torch
    from torch.utils.cpp_extension import load

    cuda_inc = cuda_include_dir()
    if cuda_inc is None:
        raise RuntimeError("the emulated CUDA build needs the CUDA toolkit's headers (cuda_runtime.h); "
                           "set CUDA_HOME")
    build_dir = build_dir or os.path.join(ROOT, "build", "emu")
    os.makedirs(build_dir, exist_ok=True)
    sources = write_sources(os.path.join(build_dir, "src"))
    # cuemu/include first: it shadows the toolkit's <mma.h>.
    includes = [os.path.join(CUEMU, "include"), CUEMU, os.path.join(ROOT, "csrc", "include"), cuda_inc]
    load(name=NAME, sources=sources, extra_cflags=EMU_FLAGS, extra_include_paths=includes,
         build_directory=build_dir, is_python_module=False, with_cuda=False, verbose=verbose)
    path = os.path.join(build_dir, f"{NAME}.so")
    assert hasattr(torch.ops, NAME) and hasattr(getattr(torch.ops, NAME), "sample_top_k_top_p"), path
    return path


if __name__ == "__main__":
    print(build(verbose="-v" in sys.argv))

"""Development build of a subset of the kernels into a private folder (parallel work without
touching the package's in-place build).

    python scripts/dev_build.py --only sampling --out /tmp/vf_sampling [--cuda]
    VAR_FAST_EXTENSION=$(cat /tmp/vf_sampling/path) pytest tests/test_sampling.py

Sources: csrc/ops.cpp, csrc/module.cpp and every csrc/cpu (and with --cuda csrc/cuda) file whose
name contains one of the --only words.
"""
import argparse
import glob
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="+", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--cuda", action="store_true", help="compile (not run) the matching .cu files too")
    args = ap.parse_args()
    sys.path.insert(0, ROOT)
    from setup import locate_cuda_home, nvidia_include_dirs  # noqa: E402  (same logic as the real build)
    locate_cuda_home()
    from torch.utils.cpp_extension import load

    pick = lambda files: [f for f in files if any(w in os.path.basename(f) for w in args.only)]
    sources = [os.path.join(ROOT, "csrc", "ops.cpp"), os.path.join(ROOT, "csrc", "module.cpp")]
    sources += pick(sorted(glob.glob(os.path.join(ROOT, "csrc", "cpu", "*.cpp"))))
    cflags = ["-O3", "-std=c++20", "-ffp-contract=off"]
    includes = [os.path.join(ROOT, "csrc", "include")]
    nvcc = None
    if args.cuda:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
        cuda_dir = os.path.join(ROOT, "csrc", "cuda")
        sources += pick(sorted(glob.glob(os.path.join(cuda_dir, "*.cu")) + glob.glob(os.path.join(cuda_dir, "*.cpp"))))
        if os.path.join(cuda_dir, "kernel_device.cpp") not in sources:
            sources.append(os.path.join(cuda_dir, "kernel_device.cpp"))
        cflags.append("-DVAR_FAST_WITH_CUDA")
        nvcc = ["-O3", "-std=c++20", "-lineinfo", "--expt-relaxed-constexpr", "-DVAR_FAST_WITH_CUDA"]
        includes += nvidia_include_dirs()
    os.makedirs(args.out, exist_ok=True)
    module = load(name="_C", sources=sources, extra_cflags=cflags, extra_cuda_cflags=nvcc,
                  extra_include_paths=includes, build_directory=args.out, verbose=False,
                  with_cuda=args.cuda or None)
    with open(os.path.join(args.out, "path"), "w") as f:
        f.write(module.__file__)
    print(module.__file__)


if __name__ == "__main__":
    main()

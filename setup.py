"""Build of var_fast and its native extension var_fast._C.

CPU kernels are always built. CUDA kernels are built when torch is a CUDA build and a CUDA
toolkit is found; VAR_FAST_CUDA=1/0 forces either way. TORCH_CUDA_ARCH_LIST (default
8.0;8.6;8.9;9.0) and MAX_JOBS are honoured. The CUDA library headers that torch's nvidia wheels
ship (site-packages/nvidia/*/include) are found without the user setting paths.
"""
import glob
import os
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
VERSION = "0.1.0"
DEFAULT_ARCHS = "8.0;8.6;8.9;9.0"


def locate_cuda_home():
    """Point CUDA_HOME at the toolkit root when only a wrapper nvcc is on PATH (torch would guess /usr/local)."""
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"):
        return
    for root in ["/usr/local/cuda"] + sorted(glob.glob("/usr/local/cuda-*"), reverse=True):
        if os.path.isfile(os.path.join(root, "bin", "nvcc")):
            os.environ["CUDA_HOME"] = root
            return


def nvidia_include_dirs():
    """include/ folders of the nvidia-* pip packages that a CUDA torch wheel depends on."""
    dirs = []
    for base in sys.path:
        for inc in sorted(glob.glob(os.path.join(base, "nvidia", "*", "include"))):
            if inc not in dirs:
                dirs.append(inc)
    return dirs


def want_cuda(torch, cuda_home):
    forced = os.environ.get("VAR_FAST_CUDA")
    if forced is not None and forced.strip() not in ("", "auto"):
        if forced.strip() == "1":
            if torch.version.cuda is None or cuda_home is None:
                raise RuntimeError("VAR_FAST_CUDA=1 but torch is not a CUDA build or no CUDA toolkit was found "
                                   f"(torch.version.cuda={torch.version.cuda}, CUDA_HOME={cuda_home})")
            return True
        return False
    return torch.version.cuda is not None and cuda_home is not None


def extension_modules():
    locate_cuda_home()
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, CppExtension, CUDAExtension

    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    include_dirs = [os.path.join(ROOT, "csrc", "include")]
    # -ffp-contract=off: host code must not fuse a * b + c into an FMA (aarch64, -march=native would), so
    # that the CPU sampling op rounds exactly like the CUDA kernel's explicit __fmul_rn / __fadd_rn.
    cxx = ["-O3", "-std=c++20", "-fvisibility=hidden", "-ffp-contract=off"]
    macros = [("VAR_FAST_VERSION", f'"{VERSION}"')]
    if want_cuda(torch, CUDA_HOME):
        archs = os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCHS)
        sources += sorted(glob.glob("csrc/cuda/*.cu") + glob.glob("csrc/cuda/*.cpp"))
        macros += [("VAR_FAST_WITH_CUDA", None), ("VAR_FAST_CUDA_ARCHS", f'"{archs}"')]
        nvcc = ["-O3", "-std=c++20", "-lineinfo", "--expt-relaxed-constexpr", "-DVAR_FAST_WITH_CUDA"]
        return [CUDAExtension("var_fast._C", sources, include_dirs=include_dirs + nvidia_include_dirs(),
                              define_macros=macros, extra_compile_args={"cxx": cxx, "nvcc": nvcc})]
    return [CppExtension("var_fast._C", sources, include_dirs=include_dirs, define_macros=macros,
                         extra_compile_args={"cxx": cxx})]


def build_ext_class():
    from torch.utils.cpp_extension import BuildExtension
    return BuildExtension.with_options(use_ninja=True)


if __name__ == "__main__":
    setup(
        name="var_fast",
        version=VERSION,
        description="Fast sampling for VAR (Visual AutoRegressive) models: C++/CUDA kernels for PyTorch",
        packages=find_packages(include=["var_fast", "var_fast.*"]),
        package_data={"var_fast": ["assets/*.pth", "assets/*.json", "serve/static/*"]},
        python_requires=">=3.11",
        install_requires=["torch>=2.11", "numpy", "safetensors", "pillow", "tqdm", "huggingface_hub"],
        extras_require={"serve": ["fastapi>=0.110", "uvicorn>=0.29"],  # var-fast serve
                        "infinity": ["transformers>=4.40,<6"]},  # Infinity's T5 text encoder
        ext_modules=extension_modules(),
        cmdclass={"build_ext": build_ext_class()},
        entry_points={"console_scripts": ["var-fast=var_fast.cli:main"]},
    )

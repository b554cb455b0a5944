#!/usr/bin/env bash
# Configure and build csrc/ with CMake against the installed (pip) libtorch, then run the C++ tests.
# The flags below are the ones a pip CUDA build of torch needs even for a CPU-only build
# (see CMakeLists.txt). Set VAR_FAST_CUDA=ON to compile the CUDA sources too.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PREFIX=$($PY -c 'import torch; print(torch.utils.cmake_prefix_path)')
CUDA_ROOT=${CUDA_HOME:-/usr/local/cuda}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-"8.0;9.0"}
# the ninja that `pip install ninja` put beside this Python (it may not be on PATH)
NINJA=$($PY -c 'import ninja, os; print(os.path.join(ninja.BIN_DIR, "ninja"))' 2>/dev/null || command -v ninja)
# libnvrtc from torch's nvidia wheels, wherever on sys.path they are (venvs with system packages too)
NVRTC=$($PY -c 'import glob, sys; print(next(iter(sorted(f for p in sys.path for f in glob.glob(p + "/nvidia/cu*/lib/libnvrtc.so*"))), ""))')
args=(-S . -B "${BUILD_DIR:-cmake-build}" -G Ninja -DCMAKE_MAKE_PROGRAM="$NINJA" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$PREFIX"
      -DVAR_FAST_CUDA="${VAR_FAST_CUDA:-OFF}" -DPython3_EXECUTABLE="$(command -v $PY)")
if [ -d "$CUDA_ROOT" ]; then args+=(-DCUDA_TOOLKIT_ROOT_DIR="$CUDA_ROOT" -DCMAKE_CUDA_COMPILER="$CUDA_ROOT/bin/nvcc"); fi
if [ -n "$NVRTC" ]; then args+=(-DCUDA_NVRTC_LIB="$NVRTC"); fi
cmake "${args[@]}"
cmake --build "${BUILD_DIR:-cmake-build}" -j "${MAX_JOBS:-2}"
ln -sf "${BUILD_DIR:-cmake-build}/compile_commands.json" compile_commands.json  # for editors
ctest --test-dir "${BUILD_DIR:-cmake-build}" --output-on-failure

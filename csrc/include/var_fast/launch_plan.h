// How a kernel is launched, as plain C++ (no CUDA or torch headers): the grid, the block, the dynamic
// shared memory and the device facts those depend on. The torch-facing launchers (csrc/cuda/*.cpp)
// compute a plan and pass it to a family's run function (csrc/cuda/*_kernels.cu), which launches with
// `<<<>>>` under nvcc and through the CPU emulator of tests/emu otherwise; both builds share every line.
#pragma once
#include <cstddef>
#include <cstdint>

struct CUstream_st;

namespace var_fast {

using Stream = CUstream_st*;  // cudaStream_t; null under the emulator

// More dynamic shared memory than this needs the kernel's cudaFuncAttributeMaxDynamicSharedMemorySize.
constexpr size_t kDefaultDynamicSmem = 48 * 1024;

// What launch plans depend on, read once per device (csrc/include/var_fast/kernel_device.h).
struct DeviceLimits {
  int cc_major = 0, cc_minor = 0;
  int64_t sm_count = 1;
  size_t smem_optin = kDefaultDynamicSmem;  // cudaDevAttrMaxSharedMemoryPerBlockOptin
};

struct LaunchPlan {
  unsigned grid_x = 1, grid_y = 1, grid_z = 1;
  unsigned block = 1;
  size_t smem = 0;         // dynamic shared memory, bytes
  size_t static_smem = 0;  // the kernel's own __shared__ variables (they count against the same limit)
  bool needs_smem_optin() const { return smem + static_smem > kDefaultDynamicSmem; }
};

// Element types of the kernels' template instantiations, chosen at run time by the launchers.
enum class DType : int { Float, Half, BFloat16, Double };

}  // namespace var_fast

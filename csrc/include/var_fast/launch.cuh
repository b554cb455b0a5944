// The one launch call of var_fast's kernels: `kernel<<<grid, block, smem, stream>>>(args...)` under nvcc,
// the CUDA execution-model emulator (tests/emu/cuemu/cuda_emu.h, pre-included) otherwise. Included by the
// kernel translation units (csrc/cuda/*_kernels.cu) only.
#pragma once
#include <cstddef>
#include <utility>

#include "var_fast/launch_plan.h"

#if defined(CUEMU_EMULATOR)
#include <ATen/record_function.h>

#include <stdexcept>
#include <string>

#include "var_fast/emulated_device.h"

// Storage of an `extern __shared__ T NAME[]` of namespace NS, defined before the kernel header.
#define VAR_FAST_DYNAMIC_SHARED(NS, T, NAME) CUEMU_DYNAMIC_SHARED(NS, T, NAME)

namespace var_fast {

// Every emulated launch is a profiler event (kEmulatedLaunchEvent): tests/test_launch_count.py counts the
// kernels the fast loop launches on the CUDA code path without a GPU.
inline constexpr const char* kEmulatedLaunchEvent = "var_fast_emu::kernel_launch";

template <typename... P, typename... A>
void launch(void (*kernel)(P...), const LaunchPlan& plan, Stream /*stream*/, A&&... args) {
  // The emulated GPU's opt-in limit is the one the launch is checked against.
  cuemu::options().smem_optin = emulated::device().smem_optin;
  emulated::record_launch(reinterpret_cast<const void*>(kernel), plan);
  RECORD_FUNCTION(kEmulatedLaunchEvent, std::vector<c10::IValue>());
  if (plan.needs_smem_optin() && cuemu::set_max_dynamic_smem(kernel, plan.smem) != cudaSuccess)
    throw std::runtime_error("emulated launch: cudaFuncSetAttribute(MaxDynamicSharedMemorySize, " +
                             std::to_string(plan.smem) + ") failed: above the device's opt-in limit");
  const cudaError_t err = cuemu::launch(kernel, dim3(plan.grid_x, plan.grid_y, plan.grid_z), dim3(plan.block),
                                        plan.smem, std::forward<A>(args)...);
  if (err != cudaSuccess) throw std::runtime_error("emulated CUDA kernel failed: " + cuemu::g_last_error);
}

}  // namespace var_fast

#else
#include <c10/cuda/CUDAException.h>
#include <cuda_runtime.h>

#define VAR_FAST_DYNAMIC_SHARED(NS, T, NAME)

namespace var_fast {

// cudaFuncSetAttribute(MaxDynamicSharedMemorySize) once per (kernel, device, size), not per launch.
void allow_dynamic_smem(const void* kernel, size_t bytes);

template <typename... P, typename... A>
void launch(void (*kernel)(P...), const LaunchPlan& plan, Stream stream, A&&... args) {
  if (plan.needs_smem_optin()) allow_dynamic_smem(reinterpret_cast<const void*>(kernel), plan.smem);
  kernel<<<dim3(plan.grid_x, plan.grid_y, plan.grid_z), dim3(plan.block), plan.smem, stream>>>(
      std::forward<A>(args)...);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace var_fast
#endif

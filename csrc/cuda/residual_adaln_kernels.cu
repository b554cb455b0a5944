// Kernel translation unit of gated_residual_adaln: the kernel of var_fast/residual_adaln.cuh launched by
// its plan (var_fast/residual_adaln_launch.h). nvcc compiles it for the GPU; tests/emu compiles the same
// file for the CUDA emulator.
#include "var_fast/launch.cuh"
#include "var_fast/kernel_dtype.h"

#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

#include "var_fast/residual_adaln.cuh"
#include "var_fast/residual_adaln_launch.h"

namespace var_fast::residual_adaln {
namespace {

template <typename T, int VEC>
void launch_typed(const Params& p, const LaunchPlan& plan, Stream stream) {
  launch(gated_residual_adaln_kernel<T, VEC>, plan, stream, static_cast<const T*>(p.x), static_cast<const T*>(p.y),
         static_cast<const T*>(p.gamma), p.gamma_stride_b, static_cast<const T*>(p.scale), p.scale_stride_b,
         static_cast<const T*>(p.shift), p.shift_stride_b, static_cast<T*>(p.out), static_cast<T*>(p.h), p.rows,
         p.L, p.C, p.eps);
}

template <typename T>
void run_typed(const Params& p, const LaunchPlan& plan, Stream stream) {
  constexpr int kPack = 16 / sizeof(T);
  if (p.vectorized) {
    launch_typed<T, kPack>(p, plan, stream);
  } else {
    launch_typed<T, 1>(p, plan, stream);
  }
}

}  // namespace

void run_gated_residual_adaln(const Params& params, DType dtype, const LaunchPlan& plan, Stream stream) {
  with_kernel_dtype(dtype, "gated_residual_adaln", [&](auto zero) { run_typed<decltype(zero)>(params, plan, stream); });
}

}  // namespace var_fast::residual_adaln

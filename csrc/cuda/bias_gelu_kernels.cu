// Kernel translation unit of bias_gelu: the kernel of var_fast/bias_gelu.cuh launched by its plan
// (var_fast/bias_gelu_launch.h). nvcc compiles it for the GPU; tests/emu compiles the same file for the
// CUDA emulator.
#include "var_fast/launch.cuh"
#include "var_fast/kernel_dtype.h"

#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

#include "var_fast/bias_gelu.cuh"
#include "var_fast/bias_gelu_launch.h"

namespace var_fast::bias_gelu {
namespace {

template <typename T, int VEC>
void launch_typed(const Params& p, const LaunchPlan& plan, Stream stream) {
  launch(bias_gelu_kernel<T, VEC>, plan, stream, static_cast<const T*>(p.x), static_cast<const T*>(p.bias),
         static_cast<T*>(p.out), p.numel / VEC, p.N / VEC);
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

void run_bias_gelu(const Params& params, DType dtype, const LaunchPlan& plan, Stream stream) {
  with_kernel_dtype(dtype, "bias_gelu", [&](auto zero) { run_typed<decltype(zero)>(params, plan, stream); });
}

}  // namespace var_fast::bias_gelu

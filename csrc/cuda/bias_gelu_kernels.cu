// Kernel translation unit of bias_gelu: the kernel of var_fast/bias_gelu.cuh launched by its plan
// (var_fast/bias_gelu_launch.h). nvcc compiles it for the GPU; tests/emu compiles the same file for the
// CUDA emulator.
#include "var_fast/launch.cuh"

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

// float64 is not instantiated: the launcher's checks accept float32, float16 and bfloat16 only.
void run_bias_gelu(const Params& params, DType dtype, const LaunchPlan& plan, Stream stream) {
  switch (dtype) {
    case DType::Float: return run_typed<float>(params, plan, stream);
    case DType::Half: return run_typed<c10::Half>(params, plan, stream);
    case DType::BFloat16: return run_typed<c10::BFloat16>(params, plan, stream);
    case DType::Double: break;
  }
  TORCH_CHECK(false, "bias_gelu: no kernel for float64");
}

}  // namespace var_fast::bias_gelu

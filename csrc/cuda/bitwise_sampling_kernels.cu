// Kernel translation unit of the bitwise sampling op: sample_bits_kernel (var_fast/bitwise_sampling.cuh)
// launched by its plan (var_fast/bitwise_sampling_launch.h). nvcc compiles it for the GPU; tests/emu compiles
// the same file for the CUDA emulator.
#include "var_fast/launch.cuh"
#include "var_fast/kernel_dtype.h"

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "var_fast/bitwise_sampling.cuh"
#include "var_fast/bitwise_sampling_launch.h"

namespace var_fast::bitwise_sampling {
namespace {

template <typename scalar_t>
void run_typed(const BitsParams& params, bool cfg, const LaunchPlan& plan, Stream stream) {
  if (cfg) {
    launch(sample_bits_kernel<scalar_t, true>, plan, stream, params);
  } else {
    launch(sample_bits_kernel<scalar_t, false>, plan, stream, params);
  }
}

}  // namespace

void run_sample_bits(const BitsParams& params, DType dtype, bool cfg, const LaunchPlan& plan, Stream stream) {
  with_kernel_dtype(dtype, "sample_bits", [&](auto zero) { run_typed<decltype(zero)>(params, cfg, plan, stream); });
}

}  // namespace var_fast::bitwise_sampling

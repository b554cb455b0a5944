// Kernel translation unit of the sampling op: sample_rows_kernel (var_fast/sampling.cuh) launched by
// its plan (var_fast/sampling_launch.h). nvcc compiles it for the GPU; tests/emu compiles the same file
// for the CUDA emulator.
#include "var_fast/launch.cuh"
#include "var_fast/kernel_dtype.h"

VAR_FAST_DYNAMIC_SHARED(var_fast::sampling, uint32_t, row_cache)

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "var_fast/sampling.cuh"
#include "var_fast/sampling_launch.h"

namespace var_fast::sampling {
namespace {

template <typename scalar_t>
void run_typed(const SampleParams& params, bool cfg, const LaunchPlan& plan, Stream stream) {
  if (cfg) {
    launch(sample_rows_kernel<scalar_t, true>, plan, stream, params);
  } else {
    launch(sample_rows_kernel<scalar_t, false>, plan, stream, params);
  }
}

}  // namespace

void run_sample_rows(const SampleParams& params, DType dtype, bool cfg, const LaunchPlan& plan, Stream stream) {
  with_kernel_dtype_or_double(dtype, [&](auto zero) { run_typed<decltype(zero)>(params, cfg, plan, stream); });
}

}  // namespace var_fast::sampling

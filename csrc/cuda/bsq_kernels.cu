// Kernel translation unit of bsq_scale_update: the kernels of var_fast/bsq.cuh launched by their plan
// (var_fast/bsq_launch.h). nvcc compiles it for the GPU; tests/emu compiles the same file for the CUDA
// emulator.
#include "var_fast/launch.cuh"

#include "var_fast/bsq.cuh"
#include "var_fast/bsq_launch.h"

namespace var_fast::bsq_cuda {

void run_bsq_scale_update(const BsqUpdateParams& update, const BsqNextParams& next, const BsqPlans& plans,
                          Stream stream) {
  if (plans.channels_fastest) {
    launch(bsq_update_kernel<true>, plans.update, stream, update);
  } else {
    launch(bsq_update_kernel<false>, plans.update, stream, update);
  }
  if (next.nh > 0) launch(bsq_next_kernel, plans.next, stream, next);
}

}  // namespace var_fast::bsq_cuda

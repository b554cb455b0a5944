// Launch plan of bias_gelu_kernel (var_fast/bias_gelu.cuh), plain C++: its parameters, the choice between
// its 16-byte (vectorized) and scalar variants, its grid, and the run function of
// csrc/cuda/bias_gelu_kernels.cu.
#pragma once
#include <algorithm>
#include <cstdint>

#include "var_fast/adaln_launch.h"
#include "var_fast/launch_plan.h"

namespace var_fast::bias_gelu {

constexpr int kThreads = 256;              // threads per block
constexpr int64_t kMaxBlocks = 1 << 16;    // the grid-stride loop covers the rest

// x, out (rows, N) contiguous, bias (N,) contiguous.
struct Params {
  const void* x;
  const void* bias;
  void* out;
  int64_t numel, N;
  bool vectorized;  // 16-byte packs
};

inline bool vectorized(DType dtype, int64_t N, bool pointers_aligned16) {
  return N % adaln::pack_elements(dtype) == 0 && pointers_aligned16;
}

// A grid-stride loop over packs: enough blocks to fill any GPU, never more than there is work.
inline LaunchPlan plan(const Params& params, DType dtype) {
  const int64_t packs = params.numel / (params.vectorized ? adaln::pack_elements(dtype) : 1);
  LaunchPlan p;
  p.grid_x = static_cast<unsigned>(std::min<int64_t>((packs + kThreads - 1) / kThreads, kMaxBlocks));
  p.block = kThreads;
  return p;
}

// bias_gelu_kernel<dtype, VEC> with VEC = pack_elements(dtype) if params.vectorized, else 1.
void run_bias_gelu(const Params& params, DType dtype, const LaunchPlan& plan, Stream stream);

}  // namespace var_fast::bias_gelu

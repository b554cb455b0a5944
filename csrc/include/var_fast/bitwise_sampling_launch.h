// Launch plan of the bitwise sampling kernel (var_fast/bitwise_sampling.cuh), plain C++: the kernel's
// parameters, its grid, and the run function of csrc/cuda/bitwise_sampling_kernels.cu.
#pragma once
#include <cstdint>

#include "var_fast/launch_plan.h"

namespace var_fast::bitwise_sampling {

constexpr int kThreads = 256;     // threads per block
constexpr int kBitsPerGroup = 4;  // one Philox4x32 call gives the uniforms of 4 consecutive bits

struct BitsParams {
  const void* logits;  // element (n, l, v) at n * stride_n + l * stride_l + v * stride_v, v < 2D
  int64_t stride_n, stride_l, stride_v;
  int64_t uncond_offset;  // CFG: elements from a conditional row to its unconditional row
  int64_t L, D;
  int64_t groups;  // B * L * ceil(D / 4): one thread each
  float inv_tau, w_cond, w_uncond;
  bool greedy;      // top_k == 1
  bool top_p;       // top-p on, with drop_at = float32(1 - top_p)
  float drop_at;
  uint64_t seed, image_offset;
  int64_t* out;  // (B, L, D) contiguous
  int* status;   // or of the flags of bad bits (var_fast/status_flags.h)
};

// Groups of 4 bits of one (image, token), ceil(D / 4) per token: the last one is partial when D % 4 != 0.
inline int64_t groups_per_token(int64_t D) { return (D + kBitsPerGroup - 1) / kBitsPerGroup; }

// One thread per group, kThreads per block; the last block is partial when groups % kThreads != 0.
inline LaunchPlan plan_sample_bits(const BitsParams& params) {
  LaunchPlan plan;
  plan.grid_x = static_cast<unsigned>((params.groups + kThreads - 1) / kThreads);
  plan.block = kThreads;
  return plan;
}

// sample_bits_kernel<dtype, cfg> over the plan's groups.
void run_sample_bits(const BitsParams& params, DType dtype, bool cfg, const LaunchPlan& plan, Stream stream);

}  // namespace var_fast::bitwise_sampling

// Launch plan of the sampling kernel (var_fast/sampling.cuh), plain C++: the kernel's parameters, its
// grid/block/shared memory, and the run function of csrc/cuda/sampling_kernels.cu.
#pragma once
#include <cstddef>
#include <cstdint>

#include "var_fast/launch_plan.h"

namespace var_fast::sampling {

constexpr int kLanes = 256;  // the CUDA block size; part of the canonical summation order
constexpr int kWarpSize = 32;
constexpr int kWarps = kLanes / kWarpSize;

struct SampleParams {
  const void* logits;  // element (b, l, v) at b * stride_b + l * stride_l + v * stride_v
  int64_t stride_b, stride_l, stride_v;
  int64_t uncond_offset;  // CFG: elements from a conditional row to its unconditional row
  int64_t L, V;
  float w_cond, w_uncond;
  int64_t top_k;  // 0: off, else 0 < top_k < V
  double top_p;   // 0: off, else 0 < top_p < 1
  uint64_t seed, row_offset;
  bool cached;  // keys and weights kept in dynamic shared memory (8 * V bytes)
  int64_t* out;
  int* status;  // or of the flags of bad rows (var_fast/status_flags.h)
};

// Shared scratch of the block reductions: per-warp partials, then the broadcast result.
struct BlockScratch {
  float mass[kWarps];
  uint32_t count[kWarps];
  uint32_t up[kWarps];
  uint32_t down[kWarps];
  float mass_all;
  uint32_t count_all, up_all, down_all;
};

// Keys and weights of a row stay in shared memory when they fit beside the scratch; otherwise every
// pass recomputes them from global memory (same numbers, more traffic).
inline bool row_fits_in_shared_memory(int64_t V, const DeviceLimits& device) {
  const size_t cache_bytes = static_cast<size_t>(V) * 2 * sizeof(uint32_t);
  return cache_bytes + sizeof(BlockScratch) + 1024 <= device.smem_optin;
}

// One block of kLanes threads per row.
inline LaunchPlan plan_sample_rows(const SampleParams& params, int64_t rows) {
  LaunchPlan plan;
  plan.grid_x = static_cast<unsigned>(rows);
  plan.block = kLanes;
  plan.smem = params.cached ? static_cast<size_t>(params.V) * 2 * sizeof(uint32_t) : 0;
  plan.static_smem = sizeof(BlockScratch);
  return plan;
}

// sample_rows_kernel<dtype, cfg> over the plan's rows.
void run_sample_rows(const SampleParams& params, DType dtype, bool cfg, const LaunchPlan& plan, Stream stream);

}  // namespace var_fast::sampling

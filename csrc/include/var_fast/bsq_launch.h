// Launch plan of bsq_scale_update's kernels (var_fast/bsq.cuh), plain C++: the kernels' parameters, their
// grids as pure functions of the shapes and the device's SM count, and the run function of
// csrc/cuda/bsq_kernels.cu. The torch-facing launcher (csrc/cuda/bsq_scale_update.cpp) checks the inputs,
// allocates, fills the parameters and calls it.
#pragma once
#include <algorithm>
#include <cstdint>

#include "var_fast/launch_plan.h"

namespace var_fast::bsq_cuda {

constexpr int kBsqThreads = 256;
constexpr int64_t kBsqBlocksPerSm = 8;  // 2048 resident threads per SM on sm_80/sm_90

struct BsqStrides {
  int64_t b, c, y, x;
};

// bsq_update_kernel: summed (B, d, H, W) at strides ss += the codes of bits (B, h, w, D) contiguous
// interpolated from the VAE grid (hv, wv) (patchify: D = 4d, hv = 2h, wv = 2w). `code` is the value of a
// 1 bit. Bits outside {0, 1} read as 0 and, when `status` is not null, OR status::kBitOutOfRange into it.
struct BsqUpdateParams {
  const int64_t* bits;
  int64_t B, h, w, D, d, hv, wv;
  bool patchify;
  float code;
  float* summed;
  BsqStrides ss;
  int64_t H, W;
  int* status;
  bool fused;  // fused multiply-adds (var_fast/bsq_interp.h)
};

// bsq_next_kernel: summed interpolated to (nh, nw) -> next (B, L, F) contiguous (patchify: pixel_unshuffle(2)).
struct BsqNextParams {
  const float* summed;
  BsqStrides ss;
  int64_t B, d, H, W, nh, nw;
  bool patchify;
  float* next;
  bool fused;
};

// A grid-stride loop of one element per thread, at most kBsqBlocksPerSm blocks per SM (more threads than
// that loop).
inline LaunchPlan plan_grid_stride(int64_t total, const DeviceLimits& device) {
  LaunchPlan plan;
  const int64_t cap = std::max<int64_t>(1, kBsqBlocksPerSm * device.sm_count);
  plan.grid_x = static_cast<unsigned>(std::clamp<int64_t>((total + kBsqThreads - 1) / kBsqThreads, 1, cap));
  plan.block = kBsqThreads;
  return plan;
}

// The update touches max(summed's elements, bits) (every bit is range-checked once, even one the
// interpolation never reads).
inline int64_t update_work(const BsqUpdateParams& p) { return std::max(p.B * p.d * p.H * p.W, p.B * p.h * p.w * p.D); }
inline int64_t next_work(const BsqNextParams& p) { return p.B * p.d * p.nh * p.nw; }

struct BsqPlans {
  LaunchPlan update;
  LaunchPlan next;  // unused at the last scale
  // The update kernel walks summed's elements with the channel fastest (channels-last summed codes) or
  // the column fastest, whichever is summed's smaller stride: neighbouring threads, neighbouring addresses.
  bool channels_fastest = false;
};

inline BsqPlans plan_bsq(const BsqUpdateParams& u, const BsqNextParams& n, const DeviceLimits& device) {
  BsqPlans plans;
  plans.update = plan_grid_stride(update_work(u), device);
  plans.next = plan_grid_stride(next_work(n), device);
  plans.channels_fastest = u.ss.c < u.ss.x;
  return plans;
}

// The update, then (when next.nh > 0) the next input, in order on `stream`.
void run_bsq_scale_update(const BsqUpdateParams& update, const BsqNextParams& next, const BsqPlans& plans,
                          Stream stream);

}  // namespace var_fast::bsq_cuda

// Launch plan of gated_residual_adaln_kernel (var_fast/residual_adaln.cuh), plain C++: its parameters,
// the choice between its 16-byte (vectorized) and scalar variants, its grid, and the run function of
// csrc/cuda/residual_adaln_kernels.cu. The layout (one warp per row, kRowsPerBlock rows per block) is
// adaln_modulate_kernel's, so the fused op's statistics are summed in the same order as adaln_modulate
// on the residual would sum them.
#pragma once
#include <cstdint>

#include "var_fast/adaln_launch.h"
#include "var_fast/launch_plan.h"

namespace var_fast::residual_adaln {

// x, y, out, h (rows, C) contiguous; gamma / scale / shift rows of C contiguous elements at b * stride,
// b = row / L.
struct Params {
  const void* x;
  const void* y;
  const void* gamma;
  int64_t gamma_stride_b;
  const void* scale;
  int64_t scale_stride_b;
  const void* shift;
  int64_t shift_stride_b;
  void* out;  // x + gamma * y, rounded to the dtype
  void* h;    // LayerNorm(out) * (1 + scale) + shift
  int64_t rows, L;
  int C;
  float eps;
  bool vectorized;  // 16-byte packs (vectorized())
};

// 16-byte packs need C a multiple of the pack, every pointer 16-byte aligned and, with more than one
// batch, modulation rows whose strides keep that alignment.
inline bool vectorized(DType dtype, int64_t B, int64_t C, int64_t gamma_stride_b, int64_t scale_stride_b,
                       int64_t shift_stride_b, bool pointers_aligned16) {
  const int vec = adaln::pack_elements(dtype);
  return C % vec == 0 && pointers_aligned16 &&
         (B == 1 || (gamma_stride_b % vec == 0 && scale_stride_b % vec == 0 && shift_stride_b % vec == 0));
}

// Blocks of gated_residual_adaln_kernel: one warp per row, as adaln_modulate_kernel.
constexpr int64_t blocks(int64_t rows) { return adaln::adaln_modulate_blocks(rows); }

inline LaunchPlan plan(const Params& params) {
  LaunchPlan p;
  p.grid_x = static_cast<unsigned>(blocks(params.rows));
  p.block = adaln::kRowsPerBlock * adaln::kWarpSize;
  return p;
}

// gated_residual_adaln_kernel<dtype, VEC> with VEC = pack_elements(dtype) if params.vectorized, else 1.
void run_gated_residual_adaln(const Params& params, DType dtype, const LaunchPlan& plan, Stream stream);

}  // namespace var_fast::residual_adaln

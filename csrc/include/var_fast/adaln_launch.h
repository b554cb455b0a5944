// Launch plans of the AdaLN elementwise kernels (var_fast/adaln.cuh), plain C++: the kernels' parameters,
// the choice between their 16-byte (vectorized) and scalar variants, their grids, and the run functions
// of csrc/cuda/adaln_kernels.cu.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "var_fast/launch_plan.h"

namespace var_fast::adaln {

constexpr int kWarpSize = 32;
constexpr int kRowsPerBlock = 4;         // warps (rows) per block of adaln_modulate_kernel
constexpr int kGatedThreads = 256;       // threads per block of gated_residual_kernel
constexpr int64_t kGatedMaxBlocks = 1 << 16;  // its grid-stride loop covers the rest

// Elements of one 16-byte pack (the vectorized variants' VEC).
constexpr int pack_elements(DType dtype) {
  switch (dtype) {
    case DType::Half:
    case DType::BFloat16: return 8;
    case DType::Double: return 2;
    case DType::Float: break;
  }
  return 4;
}

// x, y (rows, C) contiguous; scale/shift rows of C contiguous elements at b * stride_b, b = row / L.
struct ModulateParams {
  const void* x;
  const void* scale;
  int64_t scale_stride_b;
  const void* shift;
  int64_t shift_stride_b;
  void* y;
  int64_t rows, L;
  int C;
  float eps;
  bool vectorized;  // 16-byte packs (adaln_modulate_vectorized)
};

// x, y, out (B * L, C) contiguous; gamma rows of C contiguous elements at b * gamma_stride_b.
struct GatedResidualParams {
  const void* x;
  const void* y;
  const void* gamma;
  int64_t gamma_stride_b;
  void* out;
  int64_t numel, C, L;
  bool vectorized;  // 16-byte packs (gated_residual_vectorized)
};

// 16-byte packs need C a multiple of the pack, every pointer 16-byte aligned (pointers_aligned16) and,
// with more than one batch, modulation rows whose strides keep that alignment.
inline bool adaln_modulate_vectorized(DType dtype, int64_t B, int64_t C, int64_t scale_stride_b,
                                      int64_t shift_stride_b, bool pointers_aligned16) {
  const int vec = pack_elements(dtype);
  return C % vec == 0 && pointers_aligned16 && (B == 1 || (scale_stride_b % vec == 0 && shift_stride_b % vec == 0));
}

inline bool gated_residual_vectorized(DType dtype, int64_t B, int64_t C, int64_t gamma_stride_b,
                                      bool pointers_aligned16) {
  const int vec = pack_elements(dtype);
  return C % vec == 0 && pointers_aligned16 && (B == 1 || gamma_stride_b % vec == 0);
}

// Blocks of adaln_modulate_kernel: one warp per row.
constexpr int64_t adaln_modulate_blocks(int64_t rows) { return (rows + kRowsPerBlock - 1) / kRowsPerBlock; }

inline LaunchPlan plan_adaln_modulate(const ModulateParams& params) {
  LaunchPlan plan;
  plan.grid_x = static_cast<unsigned>(adaln_modulate_blocks(params.rows));
  plan.block = kRowsPerBlock * kWarpSize;
  return plan;
}

// A grid-stride loop over packs: enough blocks to fill any GPU, never more than there is work.
inline LaunchPlan plan_gated_residual(const GatedResidualParams& params, DType dtype) {
  const int64_t packs = params.numel / (params.vectorized ? pack_elements(dtype) : 1);
  LaunchPlan plan;
  plan.grid_x = static_cast<unsigned>(std::min<int64_t>((packs + kGatedThreads - 1) / kGatedThreads, kGatedMaxBlocks));
  plan.block = kGatedThreads;
  return plan;
}

// adaln_modulate_kernel<dtype, VEC> with VEC = pack_elements(dtype) if params.vectorized, else 1.
void run_adaln_modulate(const ModulateParams& params, DType dtype, const LaunchPlan& plan, Stream stream);

// gated_residual_kernel<dtype, VEC>, VEC as above.
void run_gated_residual(const GatedResidualParams& params, DType dtype, const LaunchPlan& plan, Stream stream);

}  // namespace var_fast::adaln

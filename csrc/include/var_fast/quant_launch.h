// Launch plans of the quantization kernels (var_fast/quant.cuh), plain C++: the kernels' parameters,
// their grid/block/shared memory as pure functions of the shapes and the device's limits, and the run
// functions of csrc/cuda/quant_kernels.cu. The torch-facing launchers (csrc/cuda/quant_*.cpp) check the
// inputs, allocate, fill the parameters and call the run functions.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "var_fast/launch_plan.h"

namespace var_fast::quant_cuda {

constexpr int kWarpSize = 32;

// ---- nearest_code --------------------------------------------------------------------------------------
constexpr int kNcRows = 64;      // rows of z per tile
constexpr int kNcCodes = 64;     // codes per tile
constexpr int kNcK = 16;         // channels per shared-memory stage
constexpr int kNcThreads = 256;  // 16 x 16 threads, each 4 rows x 4 codes
constexpr int kNcPad = 4;        // keeps float4 alignment of the shared rows
constexpr int kNcMergeThreads = 256;  // merge: one thread per row; refine: one warp per row

// z (N, C), codes (V, C) float32 row-major; zz (N,), ee (V,) the reference's |z|^2, |e|^2; sqrt_ee_max a
// device scalar. Partial results part_* (splits, N); tokens (N,) int64; uncertain (N,) bool.
struct NearestCodeParams {
  const float* z;
  const float* codes;
  const float* zz;
  const float* ee;
  const float* sqrt_ee_max;
  int64_t N, V, C;
  int64_t codes_per_split, splits;
  float* part_best;
  float* part_second;
  int32_t* part_index;
  int64_t* tokens;
  bool* uncertain;
};

// How the codes are split across grid.y: when there are too few row tiles to give every SM about two
// blocks, each row tile scans its codes in several blocks (whole code tiles each).
struct NearestCodeSplit {
  int64_t row_tiles, codes_per_split, splits;
};

inline NearestCodeSplit plan_nearest_code_split(int64_t N, int64_t V, const DeviceLimits& device) {
  NearestCodeSplit s;
  s.row_tiles = (N + kNcRows - 1) / kNcRows;
  const int64_t code_tiles = (V + kNcCodes - 1) / kNcCodes;
  const int64_t target_blocks = 2 * device.sm_count;
  const int64_t wanted = std::clamp<int64_t>((target_blocks + s.row_tiles - 1) / s.row_tiles, 1, code_tiles);
  s.codes_per_split = (code_tiles + wanted - 1) / wanted * kNcCodes;
  s.splits = (V + s.codes_per_split - 1) / s.codes_per_split;
  return s;
}

// The split fits one launch: grid.x is 32-bit, grid.y at most 65535.
inline bool nearest_code_split_launchable(const NearestCodeSplit& s) {
  return s.row_tiles <= INT32_MAX && s.splits <= 65535;
}

struct NearestCodePlans {
  LaunchPlan partial;  // grid (row_tiles, splits) of kNcThreads
  LaunchPlan merge;    // one thread per row
  LaunchPlan refine;   // one warp per row
};

inline NearestCodePlans plan_nearest_code(const NearestCodeSplit& s, int64_t N) {
  NearestCodePlans p;
  p.partial.grid_x = static_cast<unsigned>(s.row_tiles);
  p.partial.grid_y = static_cast<unsigned>(s.splits);
  p.partial.block = kNcThreads;
  p.partial.static_smem = 2 * kNcK * (kNcRows + kNcPad) * sizeof(float);  // zs, es (kNcRows == kNcCodes)
  p.merge.grid_x = static_cast<unsigned>((N + kNcMergeThreads - 1) / kNcMergeThreads);
  p.merge.block = kNcMergeThreads;
  constexpr int64_t rows_per_block = kNcMergeThreads / kWarpSize;
  p.refine.grid_x = static_cast<unsigned>((N + rows_per_block - 1) / rows_per_block);
  p.refine.block = kNcMergeThreads;
  return p;
}

// The partial, merge and refine kernels in order (rows the refine kernel leaves uncertain keep
// uncertain[row] = true for the launcher's reference fallback).
void run_nearest_code(const NearestCodeParams& params, const NearestCodePlans& plans, Stream stream);

// ---- area / bicubic --------------------------------------------------------------------------------------
constexpr int kResampleThreads = 256;

struct Strides4 {
  int64_t b, c, y, x;
};

// x (B, C, H, W) of `dtype`, any strides -> out of `dtype` at strides os (B, C, size, size) element
// order; channels_fastest: the threads walk the output with c fastest (the (B*size*size, C) rows).
struct AreaParams {
  const void* x;
  Strides4 xs;
  int64_t B, C, H, W, size;
  void* out;
  Strides4 os;
  bool channels_fastest;
};

// x (B, C, h, w) of `dtype`, any strides -> out (B, C, size, size) contiguous of `dtype`.
struct BicubicParams {
  const void* x;
  Strides4 xs;
  int64_t B, C, h, w, size;
  void* out;
};

// A grid-stride loop: enough blocks to fill any GPU, never more than there is work.
inline LaunchPlan plan_grid_stride(int64_t total) {
  LaunchPlan plan;
  plan.grid_x = static_cast<unsigned>(
      std::clamp<int64_t>((total + kResampleThreads - 1) / kResampleThreads, 1, int64_t{1} << 16));
  plan.block = kResampleThreads;
  return plan;
}

void run_area(const AreaParams& params, DType dtype, const LaunchPlan& plan, Stream stream);
void run_bicubic(const BicubicParams& params, DType dtype, const LaunchPlan& plan, Stream stream);

// ---- Phi ----------------------------------------------------------------------------------------------------
constexpr int kPhiThreads = 256;
constexpr int kPhiOcBlock = 8;  // output channels per thread item (weights of one tap: two float4)
constexpr int kPhiXBlock = 4;   // output columns per thread item

// Cp: C rounded up to whole output-channel blocks (the padded weight layout of phi_weight_layout).
inline int64_t phi_padded_channels(int64_t C) { return (C + kPhiOcBlock - 1) / kPhiOcBlock * kPhiOcBlock; }

// weight_t (C, 9, Cp) float32: weight[oc][ic][ky][kx] at (ic * 9 + ky * 3 + kx) * Cp + oc, zero for
// oc >= C; bias (C,) float32; keep = 1 - ratio, mix = ratio (the reference's float32 scalars).
struct PhiParams {
  const float* weight_t;
  const float* bias;
  float keep, mix;
  int64_t B, C, Cp, H, W;
};

// phi_blend: h (B, C, H, W) of `dtype`, any strides -> out (B, C, H, W) contiguous of `dtype`.
struct PhiBlendParams {
  PhiParams phi;
  const void* h;
  Strides4 hs;
  void* out;
};

// The sampler step and the encoder: target (B, C, H, W) contiguous float32 += sign * Phi(code map of
// tokens (B, pn*pn) over codes (V, C) float32, bicubic-upsampled to (H, W)). Tokens outside [0, V) are
// read as code 0 and, when `status` is not null, OR status::kTokenOutOfRange into *status.
struct PhiEmbedParams {
  PhiParams phi;
  const int64_t* tokens;
  const float* codes;
  int64_t V, pn;
  int* status;
  float* target;
  float sign;
};

// One block per tile of `tile_rows` rows of one image: grid (ceil(H / tile_rows), B); dynamic shared
// memory C * (tile_rows + 2) * (W + 2) floats (the rows with their zero halo).
struct PhiTilePlan {
  LaunchPlan launch;
  int64_t tile_rows = 1;
};

inline int64_t phi_row_bytes(int64_t C, int64_t W) { return C * (W + 2) * static_cast<int64_t>(sizeof(float)); }

inline int64_t phi_smem_limit(const DeviceLimits& device) {
  return std::max<int64_t>(kDefaultDynamicSmem, static_cast<int64_t>(device.smem_optin));
}

// A tile of one row (with its two halo rows) fits the device's shared memory.
inline bool phi_tile_fits(int64_t C, int64_t W, const DeviceLimits& device) {
  return phi_smem_limit(device) / phi_row_bytes(C, W) - 2 >= 1;
}

// Rows per tile: enough blocks for about two per SM, within the default 48 KiB of shared memory
// (opting in beyond it only when a single row does not fit). Needs phi_tile_fits and B <= 65535.
inline PhiTilePlan plan_phi_tiles(int64_t B, int64_t C, int64_t H, int64_t W, const DeviceLimits& device) {
  const int64_t row_bytes = phi_row_bytes(C, W);
  const int64_t fit_default = static_cast<int64_t>(kDefaultDynamicSmem) / row_bytes - 2;
  const int64_t fit_max = phi_smem_limit(device) / row_bytes - 2;
  const int64_t tiles_wanted = std::max<int64_t>(1, (2 * device.sm_count + B - 1) / B);
  int64_t rows = std::max<int64_t>(1, (H + tiles_wanted - 1) / tiles_wanted);
  rows = std::min({rows, H, fit_default >= 1 ? fit_default : fit_max});
  PhiTilePlan plan;
  plan.tile_rows = rows;
  plan.launch.grid_x = static_cast<unsigned>((H + rows - 1) / rows);
  plan.launch.grid_y = static_cast<unsigned>(B);
  plan.launch.block = kPhiThreads;
  plan.launch.smem = static_cast<size_t>(C * (rows + 2) * (W + 2)) * sizeof(float);
  return plan;
}

void run_phi_blend(const PhiBlendParams& params, DType dtype, const PhiTilePlan& plan, Stream stream);
void run_embed_phi(const PhiEmbedParams& params, const PhiTilePlan& plan, Stream stream);

}  // namespace var_fast::quant_cuda

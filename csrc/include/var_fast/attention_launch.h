// Launch plans of the attention kernels (var_fast/attention.cuh), plain C++: the kernels' parameters and
// tile geometry, the choice of the cached_attention variant (tensor cores or CUDA cores), the 16-byte
// K/V loads, grids and shared memory against the device's limit, and the run functions of
// csrc/cuda/attention_kernels.cu.
#pragma once
#include <cstddef>
#include <cstdint>

#include "var_fast/launch_plan.h"

#if defined(__CUDACC__)
#define VF_ATTENTION_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define VF_ATTENTION_HOST_DEVICE inline
#endif

namespace var_fast::attention {

constexpr int kWarpSize = 32;
constexpr int kMaxHeadDim = 256;
constexpr int kQkvWarpsPerBlock = 4;  // qkv_to_cache_kernel: one warp per (b, l, h)

// Element strides of a (B, H, Lmax, c) cache.
struct CacheStrides {
  int64_t b, h, l, d;
  VF_ATTENTION_HOST_DEVICE int64_t row(int64_t bi, int64_t hi, int64_t li) const { return bi * b + hi * h + li * l; }
};

// Shared memory layout of one block of attention_wmma_kernel. Rows are padded (8 halves / 4 floats)
// against bank conflicts; every region and every 16-row / 16-column fragment start stays 32-byte
// aligned, as WMMA needs.
template <int D>
struct WmmaAttentionTile {
  static_assert(D % 16 == 0, "head dim must be a multiple of 16");
  static constexpr int kWarps = 4;
  static constexpr int BQ = 16 * kWarps;  // queries per block, 16 per warp
  static constexpr int BK = 64;           // keys per tile
  static constexpr int LDK = D + 8;       // halves per row of the K, V (and Q staging) tiles
  static constexpr int LDS = BK + 4;      // floats per row of a warp's scores
  static constexpr int LDP = BK + 8;      // halves per row of a warp's probabilities (alias the scores)
  static constexpr int LDO = D + 4;       // floats per row of the output accumulator
  static constexpr int kKBytes = BK * LDK * 2;
  static constexpr int kSBytes = kWarps * 16 * LDS * 4;
  static constexpr int kOBytes = BQ * LDO * 4;
  static constexpr int kSmemBytes = 2 * kKBytes + kSBytes + kOBytes;
  static_assert(16 * LDP * 2 <= 16 * LDS * 4, "probabilities must fit in the scores they replace");
  static_assert(BQ * LDK * 2 <= kOBytes, "the Q staging tile must fit in the output accumulator");
  static_assert(kKBytes % 128 == 0 && kSBytes % 128 == 0, "regions must stay aligned");
};

// Tiles of attention_simt_kernel (any dtype, head dim <= kMaxHeadDim).
struct SimtAttentionTile {
  static constexpr int kWarps = 4;
  static constexpr int kRowsPerWarp = 4;
  static constexpr int BQ = kWarps * kRowsPerWarp;  // queries per block
  static constexpr int BK = kWarpSize;              // keys per tile: one per lane
  static constexpr int kDimsPerLane = kMaxHeadDim / kWarpSize;
  // Q (BQ, D), K (BK, D + 1: odd row stride, so lane j reading key j hits its own bank), V (BK, D)
  static constexpr size_t smem_bytes(int D) { return sizeof(float) * (BQ * D + BK * (D + 1) + BK * D); }
};

// ---- qkv_to_cache ----
// Element strides of the (2, L, c/2) float32 cos/sin table of qkv_to_cache's rope argument.
struct RopeStrides {
  int64_t sin, l, i;  // sin: from the cos table to the sin table
};

// qkv (B, L, 3, H, c) contiguous; q_out (B, H, L, c) contiguous; biases (H * c) contiguous;
// head_scale (H,) float32 or null (no L2 norm); rope (2, L, c/2) float32 or null (no rotation).
struct QkvToCacheParams {
  const void* qkv;
  const void* q_bias;
  const void* v_bias;
  const float* head_scale;
  const float* rope = nullptr;
  RopeStrides rs{0, 0, 0};
  void* q_out;
  void* k_cache;
  CacheStrides ks;
  void* v_cache;
  CacheStrides vs;
  int64_t rows;  // B * L * H
  int L, H, c;
  int64_t offset;
};

constexpr int64_t qkv_to_cache_blocks(int64_t rows) { return (rows + kQkvWarpsPerBlock - 1) / kQkvWarpsPerBlock; }

inline LaunchPlan plan_qkv_to_cache(const QkvToCacheParams& params) {
  LaunchPlan plan;
  plan.grid_x = static_cast<unsigned>(qkv_to_cache_blocks(params.rows));
  plan.block = kQkvWarpsPerBlock * kWarpSize;
  return plan;
}

// qkv_to_cache_kernel<dtype>.
void run_qkv_to_cache(const QkvToCacheParams& params, DType dtype, const LaunchPlan& plan, Stream stream);

// ---- cached_attention ----
enum class AttentionKernel : int {
  Wmma64,   // attention_wmma_kernel<T, 64>
  Wmma128,  // attention_wmma_kernel<T, 128>
  Simt,     // attention_simt_kernel<T>
};

// Tensor cores iff the device has them for 16-bit inputs (sm_80+), the inputs are 16-bit, and the head
// dim is one the WMMA kernel is instantiated for; CUDA cores otherwise.
constexpr AttentionKernel choose_attention_kernel(DType dtype, int64_t head_dim, const DeviceLimits& device) {
  const bool tensor_cores = device.cc_major >= 8 && (dtype == DType::Half || dtype == DType::BFloat16);
  if (tensor_cores && head_dim == 64) return AttentionKernel::Wmma64;
  if (tensor_cores && head_dim == 128) return AttentionKernel::Wmma128;
  return AttentionKernel::Simt;
}

constexpr size_t dtype_bytes(DType dtype) {
  switch (dtype) {
    case DType::Half:
    case DType::BFloat16: return 2;
    case DType::Double: return 8;
    case DType::Float: break;
  }
  return 4;
}

// The WMMA kernel's 16-byte K/V loads need every cache row 16-byte aligned: the base pointer
// (base_aligned16) and the batch, head and position strides.
constexpr bool cache_rows_aligned16(bool base_aligned16, const CacheStrides& s, DType dtype) {
  const int64_t bytes = static_cast<int64_t>(dtype_bytes(dtype));
  return base_aligned16 && (s.b * bytes) % 16 == 0 && (s.h * bytes) % 16 == 0 && (s.l * bytes) % 16 == 0;
}

// q (B, H, L, D) contiguous (16-byte aligned for the WMMA kernel); caches with unit stride along D;
// out (B, L, H * D) contiguous.
struct AttentionParams {
  const void* q;
  const void* k_cache;
  CacheStrides ks;
  const void* v_cache;
  CacheStrides vs;
  void* out;
  int64_t B;
  int H, L, D, kv_len;
  float scale_log2;  // scale * log2(e): the kernels use exp2
  bool vec_kv;       // WMMA kernel: 16-byte K/V loads (cache_rows_aligned16 of both caches)
};

struct AttentionPlan {
  AttentionKernel kernel;
  int64_t blocks;       // (batch, head, query tile) blocks: must fit the int32 the kernels index them with
  int64_t n_qtiles;     // query tiles per (batch, head)
  size_t smem_limit;    // the device's opt-in shared memory per block
  bool smem_fits;       // launch.smem <= smem_limit
  LaunchPlan launch;
};

inline AttentionPlan plan_cached_attention(const AttentionParams& params, AttentionKernel kernel,
                                           const DeviceLimits& device) {
  AttentionPlan plan;
  plan.kernel = kernel;
  int block_queries = SimtAttentionTile::BQ;
  int warps = SimtAttentionTile::kWarps;
  size_t smem = SimtAttentionTile::smem_bytes(params.D);
  if (kernel == AttentionKernel::Wmma64) {
    block_queries = WmmaAttentionTile<64>::BQ;
    warps = WmmaAttentionTile<64>::kWarps;
    smem = WmmaAttentionTile<64>::kSmemBytes;
  } else if (kernel == AttentionKernel::Wmma128) {
    block_queries = WmmaAttentionTile<128>::BQ;
    warps = WmmaAttentionTile<128>::kWarps;
    smem = WmmaAttentionTile<128>::kSmemBytes;
  }
  plan.n_qtiles = (params.L + block_queries - 1) / block_queries;
  plan.blocks = params.B * params.H * plan.n_qtiles;
  plan.smem_limit = device.smem_optin;
  plan.smem_fits = smem <= device.smem_optin;
  plan.launch.grid_x = static_cast<unsigned>(plan.blocks);
  plan.launch.block = warps * kWarpSize;
  plan.launch.smem = smem;
  return plan;
}

// The plan's kernel<dtype> (WMMA variants: float16 / bfloat16 only).
void run_cached_attention(const AttentionParams& params, DType dtype, const AttentionPlan& plan, Stream stream);

}  // namespace var_fast::attention

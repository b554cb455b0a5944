// Device code of the attention ops (launcher: csrc/cuda/attention.cpp; launch plans and tile geometry:
// var_fast/attention_launch.h; kernel translation unit: csrc/cuda/attention_kernels.cu).
//   qkv_to_cache_kernel    - one warp per (b, l, h): biases, optional L2 norms (warp reductions),
//                            optional RoPE (pairs in neighbouring lanes), q written out, k and v
//                            written into the caches at offset + l.
//   attention_wmma_kernel  - fp16/bf16, head dim 64 or 128: tensor-core (WMMA) flash attention, 64
//                            queries per block (16 per warp), 64-key tiles, online softmax in float32.
//   attention_simt_kernel  - any dtype, any head dim <= 256: CUDA-core flash attention, 16 queries
//                            per block (4 per warp), 32-key tiles (one key per lane).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>

#include "var_fast/attention_launch.h"

namespace var_fast {
namespace attention {

constexpr float kLog2e = 1.4426950408889634f;

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// One dynamic shared memory buffer shared by all kernels of this header.
template <typename U>
__device__ __forceinline__ U* dynamic_smem() {
  extern __shared__ __align__(128) unsigned char vf_attention_smem[];
  return reinterpret_cast<U*>(vf_attention_smem);
}

// ---------------------------------------------------------------------------------------------------
// qkv_to_cache
// ---------------------------------------------------------------------------------------------------
constexpr int kQkvPerLane = kMaxHeadDim / kWarpSize;  // head dims per lane at most

// RoPE of one element j of a row whose pairs (2i, 2i+1) sit in neighbouring lanes (lane j holds element j
// mod 32, and 32 is even): x is this lane's value, the partner's comes by shuffle (all 32 lanes call it).
// Upstream's float32 ops, each rounded, not contracted: even j -> cos*x0 - sin*x1, odd j -> sin*x0 + cos*x1.
__device__ __forceinline__ float rope_rotate(float x, int j, float cos_a, float sin_a) {
  const float partner = __shfl_xor_sync(0xffffffffu, x, 1);
  return (j & 1) == 0 ? __fsub_rn(__fmul_rn(cos_a, x), __fmul_rn(sin_a, partner))
                      : __fadd_rn(__fmul_rn(sin_a, partner), __fmul_rn(cos_a, x));
}

// qkv (B, L, 3, H, c) contiguous; q_out (B, H, L, c) contiguous; biases (H * c) contiguous;
// head_scale (H,) float32 or null (no L2 norm); rope (2, L, c/2) float32 or null (no rotation; c even).
template <typename T>
__global__ void __launch_bounds__(kQkvWarpsPerBlock* kWarpSize)
    qkv_to_cache_kernel(const T* __restrict__ qkv, const T* __restrict__ q_bias, const T* __restrict__ v_bias,
                        const float* __restrict__ head_scale, const float* __restrict__ rope, RopeStrides rs,
                        T* __restrict__ q_out, T* __restrict__ k_cache, CacheStrides ks, T* __restrict__ v_cache,
                        CacheStrides vs, int64_t rows, int L, int H, int c, int64_t offset) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kQkvWarpsPerBlock + threadIdx.x / kWarpSize;
  if (row >= rows) return;  // whole warps leave together: the shuffles below see all 32 lanes
  const int h = static_cast<int>(row % H);
  const int64_t bl = row / H;
  const int64_t b = bl / L, l = bl % L;
  const int64_t C = static_cast<int64_t>(H) * c;
  const T* src = qkv + bl * 3 * C + static_cast<int64_t>(h) * c;
  const T* qb = q_bias + static_cast<int64_t>(h) * c;
  const T* vb = v_bias + static_cast<int64_t>(h) * c;

  float q[kQkvPerLane], k[kQkvPerLane], v[kQkvPerLane];
  float q_sq = 0.f, k_sq = 0.f;
#pragma unroll
  for (int t = 0; t < kQkvPerLane; ++t) {
    const int j = lane + t * kWarpSize;
    q[t] = k[t] = v[t] = 0.f;
    if (j < c) {
      q[t] = static_cast<float>(src[j]) + static_cast<float>(qb[j]);
      k[t] = static_cast<float>(src[C + j]);
      v[t] = static_cast<float>(src[2 * C + j]) + static_cast<float>(vb[j]);
      q_sq += q[t] * q[t];
      k_sq += k[t] * k[t];
    }
  }
  float q_mul = 1.f, k_mul = 1.f;
  if (head_scale != nullptr) {  // F.normalize: x / max(||x||, 1e-12)
    q_mul = head_scale[h] / fmaxf(sqrtf(warp_sum(q_sq)), 1e-12f);
    k_mul = 1.f / fmaxf(sqrtf(warp_sum(k_sq)), 1e-12f);
  }
  T* qo = q_out + ((b * H + h) * L + l) * c;
  T* ko = k_cache + ks.row(b, h, offset + l);
  T* vo = v_cache + vs.row(b, h, offset + l);
#pragma unroll
  for (int t = 0; t < kQkvPerLane; ++t) {
    const int j = lane + t * kWarpSize;
    q[t] *= q_mul;
    k[t] *= k_mul;
    if (rope != nullptr && t * kWarpSize < c) {  // uniform over the warp: every lane reaches the shuffles
      float cos_a = 0.f, sin_a = 0.f;
      if (j < c) {
        const float* angle = rope + l * rs.l + (j / 2) * rs.i;
        cos_a = angle[0];
        sin_a = angle[rs.sin];
      }
      q[t] = rope_rotate(q[t], j, cos_a, sin_a);
      k[t] = rope_rotate(k[t], j, cos_a, sin_a);
    }
    if (j < c) {
      qo[j] = static_cast<T>(q[t]);
      ko[j * ks.d] = static_cast<T>(k[t]);
      vo[j * vs.d] = static_cast<T>(v[t]);
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// cached_attention, tensor cores (WMMA 16x16x16, float32 accumulators)
// ---------------------------------------------------------------------------------------------------
template <typename T>
struct WmmaType;
template <>
struct WmmaType<c10::Half> {
  using type = __half;
  static __device__ __forceinline__ type from_float(float v) { return __float2half_rn(v); }
};
template <>
struct WmmaType<c10::BFloat16> {
  using type = __nv_bfloat16;
  static __device__ __forceinline__ type from_float(float v) { return __float2bfloat16_rn(v); }
};

// q (B, H, L, D) contiguous and 16-byte aligned; caches with unit stride along D; out (B, L, H * D).
// vec_kv: cache rows are 16-byte aligned (16-byte loads), else element loads.
template <typename scalar_t, int D>
__global__ void __launch_bounds__(WmmaAttentionTile<D>::kWarps* kWarpSize)
    attention_wmma_kernel(const scalar_t* __restrict__ q, const scalar_t* __restrict__ k_cache, CacheStrides ks,
                          const scalar_t* __restrict__ v_cache, CacheStrides vs, scalar_t* __restrict__ out, int H,
                          int L, int kv_len, int n_qtiles, float scale_log2, bool vec_kv) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  namespace wmma = nvcuda::wmma;
  using Tile = WmmaAttentionTile<D>;
  using T = typename WmmaType<scalar_t>::type;
  constexpr int BQ = Tile::BQ, BK = Tile::BK, LDK = Tile::LDK, LDS = Tile::LDS, LDP = Tile::LDP, LDO = Tile::LDO;
  constexpr int kChunks = D / 8;  // 16-byte chunks per row
  constexpr unsigned kFull = 0xffffffffu;

  unsigned char* smem = dynamic_smem<unsigned char>();
  T* Ks = reinterpret_cast<T*>(smem);
  T* Vs = reinterpret_cast<T*>(smem + Tile::kKBytes);
  float* Ss = reinterpret_cast<float*>(smem + 2 * Tile::kKBytes);
  float* Os = reinterpret_cast<float*>(smem + 2 * Tile::kKBytes + Tile::kSBytes);
  T* Qs = reinterpret_cast<T*>(Os);  // staging only, before Os is used

  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int qtile = blockIdx.x % n_qtiles;
  const int64_t bh = blockIdx.x / n_qtiles;
  const int64_t h = bh % H, b = bh / H;
  const int q0 = qtile * BQ;
  const bool warp_has_rows = q0 + warp * 16 < L;  // warps past the last query skip the math

  // Q tile -> fragments (rows past L are zero).
  for (int i = threadIdx.x; i < BQ * kChunks; i += blockDim.x) {
    const int r = i / kChunks, ch = i % kChunks;
    uint4 val = make_uint4(0, 0, 0, 0);
    if (q0 + r < L) val = *reinterpret_cast<const uint4*>(q + (bh * L + q0 + r) * D + ch * 8);
    *reinterpret_cast<uint4*>(Qs + r * LDK + ch * 8) = val;
  }
  __syncthreads();
  wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> q_frag[D / 16];
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) wmma::load_matrix_sync(q_frag[kk], Qs + warp * 16 * LDK + kk * 16, LDK);
  __syncthreads();
  for (int i = threadIdx.x; i < BQ * LDO; i += blockDim.x) Os[i] = 0.f;
  __syncthreads();

  float* Sw = Ss + warp * 16 * LDS;  // this warp's 16 x BK scores
  T* Pw = reinterpret_cast<T*>(Sw);  // ... replaced by its probabilities
  float* Ow = Os + warp * 16 * LDO;  // this warp's 16 x D output accumulator
  // Softmax state: lanes 2r and 2r + 1 share row r, each lane holding half of the tile's keys.
  const int srow = lane / 2, shalf = lane % 2;
  float row_max = -INFINITY, row_sum = 0.f;

  for (int k0 = 0; k0 < kv_len; k0 += BK) {
    // K and V tiles (keys past kv_len are zero, so garbage never reaches the products).
    for (int i = threadIdx.x; i < BK * kChunks; i += blockDim.x) {
      const int r = i / kChunks, ch = i % kChunks;
      const int key = k0 + r;
      uint4 kval = make_uint4(0, 0, 0, 0), vval = make_uint4(0, 0, 0, 0);
      if (key < kv_len) {
        const scalar_t* kp = k_cache + ks.row(b, h, key) + ch * 8;
        const scalar_t* vp = v_cache + vs.row(b, h, key) + ch * 8;
        if (vec_kv) {
          kval = *reinterpret_cast<const uint4*>(kp);
          vval = *reinterpret_cast<const uint4*>(vp);
        } else {
          scalar_t kt[8], vt[8];
#pragma unroll
          for (int e = 0; e < 8; ++e) {
            kt[e] = kp[e];
            vt[e] = vp[e];
          }
          memcpy(&kval, kt, 16);
          memcpy(&vval, vt, 16);
        }
      }
      *reinterpret_cast<uint4*>(Ks + r * LDK + ch * 8) = kval;
      *reinterpret_cast<uint4*>(Vs + r * LDK + ch * 8) = vval;
    }
    __syncthreads();

    if (warp_has_rows) {
      // S = Q K^T: K row-major (key, d) is K^T column-major.
#pragma unroll
      for (int n = 0; n < BK / 16; ++n) {
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> s_frag;
        wmma::fill_fragment(s_frag, 0.f);
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
          wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> k_frag;
          wmma::load_matrix_sync(k_frag, Ks + n * 16 * LDK + kk * 16, LDK);
          wmma::mma_sync(s_frag, q_frag[kk], k_frag, s_frag);
        }
        wmma::store_matrix_sync(Sw + n * 16, s_frag, LDS, wmma::mem_row_major);
      }
      __syncwarp();

      // Online softmax in base 2 over this tile.
      constexpr int kHalfKeys = BK / 2;
      float s[kHalfKeys];
      float tile_max = -INFINITY;
#pragma unroll
      for (int i = 0; i < kHalfKeys; ++i) {
        const int j = shalf * kHalfKeys + i;
        s[i] = k0 + j < kv_len ? Sw[srow * LDS + j] * scale_log2 : -INFINITY;
        tile_max = fmaxf(tile_max, s[i]);
      }
      tile_max = fmaxf(tile_max, __shfl_xor_sync(kFull, tile_max, 1));
      const float new_max = fmaxf(row_max, tile_max);  // finite: every tile holds a valid key
      const float rescale = exp2f(row_max - new_max);  // 0 on the first tile
      __syncwarp();                                    // all scores read before Pw overwrites them
      float tile_sum = 0.f;
#pragma unroll
      for (int i = 0; i < kHalfKeys; ++i) {
        const float p = exp2f(s[i] - new_max);
        tile_sum += p;
        Pw[srow * LDP + shalf * kHalfKeys + i] = WmmaType<scalar_t>::from_float(p);
      }
      tile_sum += __shfl_xor_sync(kFull, tile_sum, 1);
      row_sum = row_sum * rescale + tile_sum;
      row_max = new_max;
      // Rescale the accumulator: row r's factor comes from lane 2r; all lanes sweep a row together.
#pragma unroll 4
      for (int r = 0; r < 16; ++r) {
        const float f = __shfl_sync(kFull, rescale, 2 * r);
        for (int d = lane; d < D; d += kWarpSize) Ow[r * LDO + d] *= f;
      }
      __syncwarp();

      // O += P V
#pragma unroll
      for (int n = 0; n < D / 16; ++n) {
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> o_frag;
        wmma::load_matrix_sync(o_frag, Ow + n * 16, LDO, wmma::mem_row_major);
#pragma unroll
        for (int kk = 0; kk < BK / 16; ++kk) {
          wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> p_frag;
          wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> v_frag;
          wmma::load_matrix_sync(p_frag, Pw + kk * 16, LDP);
          wmma::load_matrix_sync(v_frag, Vs + kk * 16 * LDK + n * 16, LDK);
          wmma::mma_sync(o_frag, p_frag, v_frag, o_frag);
        }
        wmma::store_matrix_sync(Ow + n * 16, o_frag, LDO, wmma::mem_row_major);
      }
    }
    __syncthreads();  // K/V tiles are overwritten next
  }

  if (!warp_has_rows) return;
  __syncwarp();
  for (int r = 0; r < 16; ++r) {
    const float inv_sum = 1.f / __shfl_sync(kFull, row_sum, 2 * r);
    const int row = q0 + warp * 16 + r;
    if (row >= L) break;
    scalar_t* o = out + ((b * L + row) * H + h) * D;
    for (int d = lane; d < D; d += kWarpSize) o[d] = static_cast<scalar_t>(Ow[r * LDO + d] * inv_sum);
  }
#else
  __trap();  // the launcher only picks this kernel on sm_80 and newer
#endif
}

// ---------------------------------------------------------------------------------------------------
// cached_attention, CUDA cores (any dtype, head dim <= 256)
// ---------------------------------------------------------------------------------------------------
template <typename scalar_t>
__global__ void __launch_bounds__(SimtAttentionTile::kWarps* kWarpSize)
    attention_simt_kernel(const scalar_t* __restrict__ q, const scalar_t* __restrict__ k_cache, CacheStrides ks,
                          const scalar_t* __restrict__ v_cache, CacheStrides vs, scalar_t* __restrict__ out, int H,
                          int L, int D, int kv_len, int n_qtiles, float scale_log2) {
  using Tile = SimtAttentionTile;
  constexpr int BQ = Tile::BQ, BK = Tile::BK, kRows = Tile::kRowsPerWarp, kDims = Tile::kDimsPerLane;
  constexpr unsigned kFull = 0xffffffffu;
  const int ldk = D + 1;
  float* Qs = dynamic_smem<float>();
  float* Ks = Qs + BQ * D;
  float* Vs = Ks + BK * ldk;

  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int qtile = blockIdx.x % n_qtiles;
  const int64_t bh = blockIdx.x / n_qtiles;
  const int64_t h = bh % H, b = bh / H;
  const int q0 = qtile * BQ;

  for (int i = threadIdx.x; i < BQ * D; i += blockDim.x) {
    const int r = i / D, d = i % D;
    Qs[i] = q0 + r < L ? static_cast<float>(q[(bh * L + q0 + r) * D + d]) * scale_log2 : 0.f;
  }
  float row_max[kRows], row_sum[kRows], acc[kRows][kDims];
#pragma unroll
  for (int i = 0; i < kRows; ++i) {
    row_max[i] = -INFINITY;
    row_sum[i] = 0.f;
#pragma unroll
    for (int t = 0; t < kDims; ++t) acc[i][t] = 0.f;
  }

  for (int k0 = 0; k0 < kv_len; k0 += BK) {
    __syncthreads();  // previous tile fully used (and, the first time, Qs written)
    for (int i = threadIdx.x; i < BK * D; i += blockDim.x) {
      const int r = i / D, d = i % D;
      const int key = k0 + r;
      const bool valid = key < kv_len;
      Ks[r * ldk + d] = valid ? static_cast<float>(k_cache[ks.row(b, h, key) + d * ks.d]) : 0.f;
      Vs[r * D + d] = valid ? static_cast<float>(v_cache[vs.row(b, h, key) + d * vs.d]) : 0.f;
    }
    __syncthreads();

    const bool key_valid = k0 + lane < kv_len;
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
      const float* qr = Qs + (warp * kRows + i) * D;
      const float* kr = Ks + lane * ldk;
      float s = 0.f;
      for (int d = 0; d < D; ++d) s += qr[d] * kr[d];
      s = key_valid ? s : -INFINITY;
      const float new_max = fmaxf(row_max[i], warp_max(s));  // finite: lane 0's key is always valid
      const float rescale = exp2f(row_max[i] - new_max);
      const float p = exp2f(s - new_max);
      row_sum[i] = row_sum[i] * rescale + warp_sum(p);
      row_max[i] = new_max;
#pragma unroll
      for (int t = 0; t < kDims; ++t) acc[i][t] *= rescale;
      for (int j = 0; j < BK; ++j) {
        const float pj = __shfl_sync(kFull, p, j);
        const float* vr = Vs + j * D;
#pragma unroll
        for (int t = 0; t < kDims; ++t) {
          const int d = lane + t * kWarpSize;
          if (d < D) acc[i][t] += pj * vr[d];
        }
      }
    }
  }

#pragma unroll
  for (int i = 0; i < kRows; ++i) {
    const int row = q0 + warp * kRows + i;
    if (row >= L) break;
    const float inv_sum = 1.f / row_sum[i];
    scalar_t* o = out + ((b * L + row) * H + h) * D;
#pragma unroll
    for (int t = 0; t < kDims; ++t) {
      const int d = lane + t * kWarpSize;
      if (d < D) o[d] = static_cast<scalar_t>(acc[i][t] * inv_sum);
    }
  }
}

}  // namespace attention
}  // namespace var_fast

// Device code of the AdaLN elementwise ops (launchers: csrc/cuda/adaln_modulate.cpp, gated_residual.cpp;
// launch plans: var_fast/adaln_launch.h; kernel translation unit: csrc/cuda/adaln_kernels.cu).
//   adaln_modulate_kernel - one warp per row: float32 mean, then centred variance, then
//                           y = (x - mean) * rstd * (1 + scale) + shift, with 16-byte loads when aligned.
//   gated_residual_kernel - out = x + gamma * y over packs of VEC elements (16 bytes when aligned).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "var_fast/adaln_launch.h"

namespace var_fast {
namespace adaln {

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// VEC consecutive elements moved as one transaction (16 bytes for VEC = 16 / sizeof(T)).
template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
  T v[VEC];
};

template <typename T, int VEC>
__device__ __forceinline__ void load_floats(const T* p, float (&out)[VEC]) {
  const Pack<T, VEC> pack = *reinterpret_cast<const Pack<T, VEC>*>(p);
#pragma unroll
  for (int i = 0; i < VEC; ++i) out[i] = static_cast<float>(pack.v[i]);
}

template <typename T, int VEC>
__device__ __forceinline__ void store_floats(T* p, const float (&in)[VEC]) {
  Pack<T, VEC> pack;
#pragma unroll
  for (int i = 0; i < VEC; ++i) pack.v[i] = static_cast<T>(in[i]);
  *reinterpret_cast<Pack<T, VEC>*>(p) = pack;
}

// x (rows, C) contiguous; scale/shift rows of C contiguous elements at b * stride_b with b = row / L.
// VEC > 1 needs C % VEC == 0 and every row start aligned to sizeof(T) * VEC bytes.
template <typename T, int VEC>
__global__ void __launch_bounds__(kRowsPerBlock* kWarpSize)
    adaln_modulate_kernel(const T* __restrict__ x, const T* __restrict__ scale, int64_t scale_stride_b,
                          const T* __restrict__ shift, int64_t shift_stride_b, T* __restrict__ y, int64_t rows,
                          int64_t L, int C, float eps) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarpSize;
  if (row >= rows) return;
  const T* xr = x + row * C;
  constexpr int kStep = kWarpSize * VEC;

  float sum = 0.f;
  for (int c = lane * VEC; c < C; c += kStep) {
    float v[VEC];
    load_floats<T, VEC>(xr + c, v);
#pragma unroll
    for (int i = 0; i < VEC; ++i) sum += v[i];
  }
  const float mean = warp_sum(sum) / static_cast<float>(C);
  // Second pass over the centred values (the row is in L1 now): no cancellation for large means.
  float sq = 0.f;
  for (int c = lane * VEC; c < C; c += kStep) {
    float v[VEC];
    load_floats<T, VEC>(xr + c, v);
#pragma unroll
    for (int i = 0; i < VEC; ++i) sq += (v[i] - mean) * (v[i] - mean);
  }
  const float rstd = rsqrtf(warp_sum(sq) / static_cast<float>(C) + eps);

  const int64_t b = row / L;
  const T* sc = scale + b * scale_stride_b;
  const T* sh = shift + b * shift_stride_b;
  T* yr = y + row * C;
  for (int c = lane * VEC; c < C; c += kStep) {
    float v[VEC], s[VEC], t[VEC], out[VEC];
    load_floats<T, VEC>(xr + c, v);
    load_floats<T, VEC>(sc + c, s);
    load_floats<T, VEC>(sh + c, t);
#pragma unroll
    for (int i = 0; i < VEC; ++i) out[i] = (v[i] - mean) * rstd * (1.f + s[i]) + t[i];
    store_floats<T, VEC>(yr + c, out);
  }
}

// x, y, out (rows, C) contiguous, gamma rows of C contiguous elements at b * gamma_stride_b.
// Pack i holds elements [i * VEC, (i + 1) * VEC) of the flat tensors; VEC divides C.
template <typename T, int VEC>
__global__ void __launch_bounds__(kGatedThreads)
    gated_residual_kernel(const T* __restrict__ x, const T* __restrict__ y, const T* __restrict__ gamma,
                          int64_t gamma_stride_b, T* __restrict__ out, int64_t packs, int64_t packs_per_row,
                          int64_t L) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < packs;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = i / packs_per_row;
    const int64_t c = (i - row * packs_per_row) * VEC;
    float xv[VEC], yv[VEC], g[VEC], o[VEC];
    load_floats<T, VEC>(x + i * VEC, xv);
    load_floats<T, VEC>(y + i * VEC, yv);
    load_floats<T, VEC>(gamma + (row / L) * gamma_stride_b + c, g);
#pragma unroll
    for (int k = 0; k < VEC; ++k) o[k] = xv[k] + g[k] * yv[k];
    store_floats<T, VEC>(out + i * VEC, o);
  }
}

}  // namespace adaln
}  // namespace var_fast

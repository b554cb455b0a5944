// Device code of gated_residual_adaln (launcher: csrc/cuda/gated_residual_adaln.cpp; launch plan:
// var_fast/residual_adaln_launch.h; kernel translation unit: csrc/cuda/residual_adaln_kernels.cu).
//   gated_residual_adaln_kernel - one warp per row: out = x + gamma * y (rounded to T and stored), then
//                                 adaln_modulate_kernel's arithmetic on the rounded row:
//                                 h = (out - mean) * rstd * (1 + scale) + shift.
// One launch and one pass over x and y instead of gated_residual followed by adaln_modulate; the values
// are those of the two ops (same expressions, same per-lane summation order for the same VEC).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "var_fast/adaln.cuh"
#include "var_fast/residual_adaln_launch.h"

namespace var_fast {
namespace residual_adaln {

// Rows of C contiguous elements; gamma / scale / shift rows at b * stride with b = row / L.
// VEC > 1 needs C % VEC == 0 and every row start aligned to sizeof(T) * VEC bytes.
template <typename T, int VEC>
__global__ void __launch_bounds__(adaln::kRowsPerBlock* adaln::kWarpSize)
    gated_residual_adaln_kernel(const T* __restrict__ x, const T* __restrict__ y, const T* __restrict__ gamma,
                                int64_t gamma_stride_b, const T* __restrict__ scale, int64_t scale_stride_b,
                                const T* __restrict__ shift, int64_t shift_stride_b, T* __restrict__ out,
                                T* __restrict__ h, int64_t rows, int64_t L, int C, float eps) {
  using adaln::kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * adaln::kRowsPerBlock + threadIdx.x / kWarpSize;
  if (row >= rows) return;
  const int64_t b = row / L;
  const T* xr = x + row * C;
  const T* yr = y + row * C;
  const T* g = gamma + b * gamma_stride_b;
  T* outr = out + row * C;
  constexpr int kStep = kWarpSize * VEC;

  // Pass 1: the residual, rounded to T as gated_residual stores it; the sum of the rounded values.
  float sum = 0.f;
  for (int c = lane * VEC; c < C; c += kStep) {
    float xv[VEC], yv[VEC], gv[VEC];
    adaln::load_floats<T, VEC>(xr + c, xv);
    adaln::load_floats<T, VEC>(yr + c, yv);
    adaln::load_floats<T, VEC>(g + c, gv);
    adaln::Pack<T, VEC> o;
#pragma unroll
    for (int i = 0; i < VEC; ++i) o.v[i] = static_cast<T>(xv[i] + gv[i] * yv[i]);
    *reinterpret_cast<adaln::Pack<T, VEC>*>(outr + c) = o;
#pragma unroll
    for (int i = 0; i < VEC; ++i) sum += static_cast<float>(o.v[i]);
  }
  const float mean = adaln::warp_sum(sum) / static_cast<float>(C);
  // Pass 2: centred variance, as adaln_modulate_kernel; each lane reads back only what it stored.
  float sq = 0.f;
  for (int c = lane * VEC; c < C; c += kStep) {
    float v[VEC];
    adaln::load_floats<T, VEC>(outr + c, v);
#pragma unroll
    for (int i = 0; i < VEC; ++i) sq += (v[i] - mean) * (v[i] - mean);
  }
  const float rstd = rsqrtf(adaln::warp_sum(sq) / static_cast<float>(C) + eps);

  const T* sc = scale + b * scale_stride_b;
  const T* sh = shift + b * shift_stride_b;
  T* hr = h + row * C;
  for (int c = lane * VEC; c < C; c += kStep) {
    float v[VEC], s[VEC], t[VEC], o[VEC];
    adaln::load_floats<T, VEC>(outr + c, v);
    adaln::load_floats<T, VEC>(sc + c, s);
    adaln::load_floats<T, VEC>(sh + c, t);
#pragma unroll
    for (int i = 0; i < VEC; ++i) o[i] = (v[i] - mean) * rstd * (1.f + s[i]) + t[i];
    adaln::store_floats<T, VEC>(hr + c, o);
  }
}

}  // namespace residual_adaln
}  // namespace var_fast

// Multi-scale residual quantization: helpers shared by the CPU kernels (csrc/cpu/quant_*.cpp) and, for
// the index/weight math, by the CUDA kernels (var_fast/quant.cuh includes this header).
//
// Everything here works on float32: fp16/bf16 inputs are converted once at the op boundary, so all the
// arithmetic (and, for nearest_code, the rounding that decides near-ties) is float32 as in the reference.
#pragma once

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define VF_QUANT_HD __host__ __device__ __forceinline__
#else
#define VF_QUANT_HD inline
#endif

namespace var_fast::quant {

// ---- F.interpolate(mode='area') == adaptive_avg_pool2d: output cell o of `out` cells over `in` input
// cells averages [floor(o*in/out), ceil((o+1)*in/out)). Same integer formulas as ATen's start/end_index.
VF_QUANT_HD int64_t area_begin(int64_t o, int64_t out, int64_t in) { return (o / out) * in + ((o % out) * in) / out; }
VF_QUANT_HD int64_t area_end(int64_t o, int64_t out, int64_t in) { return 1 + ((o + 1) * in - 1) / out; }

// ---- F.interpolate(mode='bicubic', align_corners=False): the 4 source taps of one output coordinate.
// Source coordinate (dst + 0.5) * in/out - 0.5 is NOT clamped to 0 for cubic (ATen's
// area_pixel_compute_source_index(cubic=true)); the taps floor-1 .. floor+2 are index-clamped instead.
// Keys' cubic convolution with A = -0.75, evaluated exactly as ATen's get_cubic_upsample_coefficients.
struct CubicTaps {
  int64_t index[4];
  float weight[4];
};

VF_QUANT_HD float cubic_near(float x) {  // |x| <= 1
  constexpr float A = -0.75f;
  return ((A + 2.0f) * x - (A + 3.0f)) * x * x + 1.0f;
}
VF_QUANT_HD float cubic_far(float x) {  // 1 < |x| < 2
  constexpr float A = -0.75f;
  return ((A * x - 5.0f * A) * x + 8.0f * A) * x - 4.0f * A;
}

VF_QUANT_HD CubicTaps cubic_taps(int64_t dst, int64_t in_size, int64_t out_size) {
  const float scale = static_cast<float>(in_size) / static_cast<float>(out_size);
  const float src = scale * (static_cast<float>(dst) + 0.5f) - 0.5f;
  const int64_t base = std::min(static_cast<int64_t>(floorf(src)), in_size - 1);
  const float t = std::min(std::max(src - static_cast<float>(base), 0.0f), 1.0f);
  CubicTaps taps;
  const float t_opposite = 1.0f - t;
  taps.weight[0] = cubic_far(t + 1.0f);
  taps.weight[1] = cubic_near(t);
  taps.weight[2] = cubic_near(t_opposite);
  taps.weight[3] = cubic_far(t_opposite + 1.0f);
  for (int k = 0; k < 4; ++k) {
    taps.index[k] = std::min(std::max(base - 1 + k, int64_t{0}), in_size - 1);
  }
  return taps;
}

// ---- nearest_code certification (see csrc/cpu/quant_nearest_code.cpp for the whole argument).
// The reference's distance is fl(fl(|z|^2 + |e|^2) - 2 * p) with p the float32 dot product z.e in the
// BLAS's (unknown) summation order; ours uses the same |z|^2, |e|^2 and sum, with p in channel order.
// Any two float32 evaluations of a C-term dot product differ by at most 2 * gamma_C * sum|z_k e_k| with
// gamma_C = C u / (1 - C u), u = 2^-24, and sum|z_k e_k| <= sqrt(|z|^2 |e|^2). Our best code is then
// provably the reference's whenever the runner-up is further than the bound below (25% slack covers the
// second-order terms and the rounding of |z|^2, |e|^2 and the bound itself).
VF_QUANT_HD bool nearest_code_certain(float best, float second, float zz, float sqrt_ee_max, int64_t C) {
  const double u = 5.9604644775390625e-08;  // 2^-24
  const double gamma = static_cast<double>(C) * u / (1.0 - static_cast<double>(C) * u);
  const double b = best, s = second, abs_sum = (b < 0 ? -b : b) + (s < 0 ? -s : s);
#if defined(__CUDA_ARCH__)
  const double norm_z = ::sqrt(static_cast<double>(zz));
#else
  const double norm_z = std::sqrt(static_cast<double>(zz));
#endif
  const double margin = 1.25 * (8.0 * gamma * norm_z * static_cast<double>(sqrt_ee_max) + 2.0 * u * abs_sum);
  // x - x == 0 is false for inf and NaN: a non-finite best or bound reads as "not certain", and a NaN
  // runner-up makes the gap test false, so the exact fallback decides those rows.
  return (b - b) == 0.0 && (margin - margin) == 0.0 && s - b > margin;
}

}  // namespace var_fast::quant

namespace var_fast::quant_cpu {

// Unless said otherwise the helpers below take contiguous float32 tensors (int64 tokens) on the CPU,
// already checked by the op that calls them, and return or fill float32.

// z (N, C), codebook (V, C) -> int64 (N,): the reference's argmin of ||z||^2 + ||e||^2 - 2 z.e.
at::Tensor nearest_code_f32(const at::Tensor& z, const at::Tensor& codebook);

// x (B, C, H, W) -> (B, C, size, size) area average; channels_last_rows=true writes (B*size*size, C)
// instead (the (N, C) matrix of nearest_code, rows in (b, y, x) order).
at::Tensor area_downsample_f32(const at::Tensor& x, int64_t size, bool channels_last_rows);

// x (B, C, h, w) -> (B, C, size, size) bicubic (separable: rows, then columns; same sums as ATen).
at::Tensor bicubic_upsample_f32(const at::Tensor& x, int64_t size);

// Code maps of `tokens` (B, pn*pn) bicubic-upsampled to (H, W) (copied when pn == H), written into the
// interior of a zero-bordered buffer (B, C, H + 2, W + 2) ready for phi_blend_padded.
at::Tensor embed_upsample_padded_f32(const at::Tensor& tokens, const at::Tensor& codebook, int64_t pn, int64_t H,
                                     int64_t W);

// Zero-bordered float32 copy (B, C, H + 2, W + 2) of h (B, C, H, W), any floating dtype and strides.
at::Tensor pad_planes(const at::Tensor& h);

enum class PhiSink { kStore, kAdd, kSubtract };

// phi = (1 - ratio) * h + ratio * (conv3x3(h) + bias) from the padded h (B, C, H + 2, W + 2), weight
// (C, C, 3, 3) and bias (C,); then target (B, C, H, W) = phi, += phi or -= phi.
void phi_blend_padded(const at::Tensor& h_padded, const at::Tensor& weight, const at::Tensor& bias, double ratio,
                      const at::Tensor& target, PhiSink sink);

}  // namespace var_fast::quant_cpu

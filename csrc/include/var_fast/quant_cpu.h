// Multi-scale residual quantization: helpers shared by the CPU kernels (csrc/cpu/quant_*.cpp) and, for the
// index/weight math, the nearest_code bounds and the argument checks, by the CUDA launchers too
// (var_fast/quant.cuh includes this header).
//
// All arithmetic is float32 as in the reference: fp16/bf16 values are widened as they are read, or
// converted once at the op boundary (nearest_code, whose float32 rounding decides near-ties).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "var_fast/check.h"

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

// ---- nearest_code certification (the whole argument is at the top of csrc/cpu/quant_nearest_code.cpp).
// The reference's distance to code v is d_ref = fl(b_v - 2 p_ref) with b_v = fl(|z|^2 + |e_v|^2) (we use
// the same b_v) and p_ref the float32 dot product z.e_v summed in the BLAS's unknown order. Whatever the
// order, |p_ref - z.e_v| <= gamma_C * S_v with gamma_C = C u / (1 - C u), u = 2^-24, S_v = sum|z_k e_vk|.
constexpr double kUnitRoundoff = 5.9604644775390625e-08;  // 2^-24
constexpr double kBoundSlack = 1.25;  // covers second-order terms and the rounding of the bounds themselves

VF_QUANT_HD double dot_error_gamma(int64_t C) {
  return static_cast<double>(C) * kUnitRoundoff / (1.0 - static_cast<double>(C) * kUnitRoundoff);
}

VF_QUANT_HD bool is_finite_value(double x) { return (x - x) == 0.0; }  // false for inf and NaN

// First pass, from our own float32 distances: best and runner-up of one row (ours), |z|^2 and the
// largest |e|^2. Ours and the reference's distances differ by at most 4 gamma_C S_v + u (|d| + |d'|)
// per code, S_v <= |z| |e_v|; the best is provably the reference's when the runner-up is further away
// than the two codes' bounds together. NaN/inf anywhere reads as "not certain".
VF_QUANT_HD bool nearest_code_certain(float best, float second, float zz, float sqrt_ee_max, int64_t C) {
  const double b = best, s = second, abs_sum = (b < 0 ? -b : b) + (s < 0 ? -s : s);
#if defined(__CUDA_ARCH__)
  const double norm_z = ::sqrt(static_cast<double>(zz));
#else
  const double norm_z = std::sqrt(static_cast<double>(zz));
#endif
  const double margin = kBoundSlack * (8.0 * dot_error_gamma(C) * norm_z * static_cast<double>(sqrt_ee_max) +
                                       2.0 * kUnitRoundoff * abs_sum);
  return is_finite_value(b) && is_finite_value(margin) && s - b > margin;
}

// Second pass, for the rows the first could not certify: with the exact distance d_exact = b_v - 2 z.e_v
// (float products are exact in double, the double sum is far below the bound) and the exact S_v, the
// reference's distance lies within d_exact +- this bound. Disjoint intervals decide the reference's argmin.
VF_QUANT_HD double nearest_code_exact_bound(double d_exact, double abs_dot_sum, int64_t C) {
  const double dot_bound = 2.0 * dot_error_gamma(C) * abs_dot_sum;
  return kBoundSlack * (dot_bound + kUnitRoundoff * ((d_exact < 0 ? -d_exact : d_exact) + dot_bound));
}


// ---- argument checks shared by the CPU and CUDA launchers (each message names the argument) -----------
inline void check_nearest_code_args(const at::Tensor& z, const at::Tensor& codebook) {
  VF_CHECK_DIM(z, 2);
  VF_CHECK_DIM(codebook, 2);
  VF_CHECK_FLOATING(z);
  VF_CHECK_FLOATING(codebook);
  VF_CHECK_DEVICE(codebook, z.device());
  TORCH_CHECK(codebook.size(1) == z.size(1), "nearest_code: codebook must be (V, C) with C = z.size(1) = ", z.size(1),
              ", got shape ", codebook.sizes());
  TORCH_CHECK(codebook.size(0) > 0, "nearest_code: codebook must hold at least one code, got shape ",
              codebook.sizes());
}

inline void check_image_args(const at::Tensor& x, int64_t size, const char* op) {
  TORCH_CHECK(x.dim() == 4, op, ": x must be 4-D (B, C, H, W), got shape ", x.sizes());
  VF_CHECK_FLOATING(x);
  TORCH_CHECK(size >= 1, op, ": size must be >= 1, got ", size);
  TORCH_CHECK(x.size(2) >= 1 && x.size(3) >= 1, op, ": x must have non-empty spatial dims, got shape ", x.sizes());
}

inline void check_phi_args(const at::Tensor& weight, const at::Tensor& bias, int64_t C, const at::Device& device,
                           const char* op, const char* weight_name, const char* bias_name) {
  TORCH_CHECK(weight.dim() == 4 && weight.size(0) == C && weight.size(1) == C && weight.size(2) == 3 &&
                  weight.size(3) == 3,
              op, ": ", weight_name, " must be (C, C, 3, 3) with C = ", C, ", got shape ", weight.sizes());
  TORCH_CHECK(bias.dim() == 1 && bias.size(0) == C, op, ": ", bias_name, " must be (C,) with C = ", C, ", got shape ",
              bias.sizes());
  VF_CHECK_FLOATING(weight);
  VF_CHECK_FLOATING(bias);
  VF_CHECK_DEVICE(weight, device);
  VF_CHECK_DEVICE(bias, device);
}

inline void check_codebook_args(const at::Tensor& codebook, int64_t C, const at::Device& device, const char* op) {
  TORCH_CHECK(codebook.dim() == 2 && codebook.size(1) == C && codebook.size(0) >= 1, op,
              ": codebook must be (V, C) with V >= 1 and C = ", C, ", got shape ", codebook.sizes());
  VF_CHECK_FLOATING(codebook);
  VF_CHECK_DEVICE(codebook, device);
}

// nearest_code's last resort, on CPU and CUDA alike: rows flagged in `uncertain` take torch.argmin of the
// reference formula itself, recomputed with the same ATen ops on the same shapes: the BLAS's rounding,
// argmin's ties and NaN rule. z (N, C), zz = |z|^2 (N,), codes (V, C), norms = |e|^2 (V,), tokens (N,).
inline void take_reference_argmin(const at::Tensor& z, const at::Tensor& zz, const at::Tensor& codes,
                                  const at::Tensor& norms, const at::Tensor& uncertain, at::Tensor& tokens) {
  at::Tensor dist = zz.unsqueeze(1).add(norms);
  dist.addmm_(z, codes.t(), /*beta=*/1, /*alpha=*/-2);
  const at::Tensor rows = uncertain.nonzero().squeeze(1);
  tokens.index_copy_(0, rows, dist.index_select(0, rows).argmin(1));
}

// Side of a square token map of `count` tokens, or -1.
inline int64_t square_side(int64_t count) {
  const int64_t side = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(count))));
  return side * side == count ? side : -1;
}

// Checks quant_sampler_step's arguments (all but the token values) and returns pn.
inline int64_t check_sampler_step_args(const at::Tensor& tokens, const at::Tensor& codebook, const at::Tensor& f_hat,
                                       const at::Tensor& phi_weight, const at::Tensor& phi_bias, int64_t next_size) {
  constexpr const char* op = "quant_sampler_step";
  TORCH_CHECK(f_hat.dim() == 4, op, ": f_hat must be 4-D (B, C, H, W), got shape ", f_hat.sizes());
  TORCH_CHECK(f_hat.scalar_type() == at::kFloat, op, ": f_hat must be float32, got ", f_hat.scalar_type());
  const int64_t B = f_hat.size(0), C = f_hat.size(1), H = f_hat.size(2), W = f_hat.size(3);
  TORCH_CHECK(tokens.dim() == 2 && tokens.size(0) == B, op, ": tokens must be (B, pn*pn) with B = ", B,
              ", got shape ", tokens.sizes());
  TORCH_CHECK(tokens.scalar_type() == at::kLong, op, ": tokens must be int64, got ", tokens.scalar_type());
  VF_CHECK_DEVICE(tokens, f_hat.device());
  const int64_t pn = square_side(tokens.size(1));
  TORCH_CHECK(pn >= 1 && pn <= H && pn <= W, op, ": tokens must hold a square map pn*pn with 1 <= pn <= min(H, W) = ",
              std::min(H, W), ", got ", tokens.size(1), " tokens per image");
  check_codebook_args(codebook, C, f_hat.device(), op);
  check_phi_args(phi_weight, phi_bias, C, f_hat.device(), op, "phi_weight", "phi_bias");
  TORCH_CHECK(next_size >= 0, op, ": next_size must be >= 0 (0 = last scale), got ", next_size);
  return pn;
}

inline void check_encode_args(const at::Tensor& f, const at::Tensor& codebook, const at::Tensor& phi_weights,
                              const at::Tensor& phi_biases, c10::IntArrayRef phi_index, c10::IntArrayRef patch_nums) {
  constexpr const char* op = "quant_encode";
  TORCH_CHECK(f.dim() == 4, op, ": f must be 4-D (B, C, H, W), got shape ", f.sizes());
  VF_CHECK_FLOATING(f);
  const int64_t C = f.size(1), H = f.size(2), W = f.size(3);
  const int64_t S = static_cast<int64_t>(patch_nums.size());
  TORCH_CHECK(S >= 1, op, ": patch_nums must not be empty");
  TORCH_CHECK(patch_nums.back() == H && patch_nums.back() == W, op, ": the last patch size must equal the feature ",
              "map's H and W, got patch_nums[-1] = ", patch_nums.back(), " for f of shape ", f.sizes());
  for (int64_t si = 0; si < S; ++si) {
    TORCH_CHECK(patch_nums[si] >= 1 && patch_nums[si] <= H, op, ": patch_nums must lie in [1, H = ", H, "], got ",
                patch_nums[si], " at scale ", si);
  }
  check_codebook_args(codebook, C, f.device(), op);
  TORCH_CHECK(phi_weights.dim() == 5 && phi_weights.size(0) >= 1 && phi_weights.size(1) == C &&
                  phi_weights.size(2) == C && phi_weights.size(3) == 3 && phi_weights.size(4) == 3,
              op, ": phi_weights must be (K, C, C, 3, 3) with K >= 1 and C = ", C, ", got shape ", phi_weights.sizes());
  const int64_t K = phi_weights.size(0);
  TORCH_CHECK(phi_biases.dim() == 2 && phi_biases.size(0) == K && phi_biases.size(1) == C, op,
              ": phi_biases must be (K, C) = (", K, ", ", C, "), got shape ", phi_biases.sizes());
  VF_CHECK_FLOATING(phi_weights);
  VF_CHECK_FLOATING(phi_biases);
  VF_CHECK_DEVICE(phi_weights, f.device());
  VF_CHECK_DEVICE(phi_biases, f.device());
  TORCH_CHECK(static_cast<int64_t>(phi_index.size()) == S, op, ": phi_index must hold one entry per scale (", S,
              "), got ", phi_index.size());
  for (int64_t si = 0; si < S; ++si) {
    TORCH_CHECK(phi_index[si] >= 0 && phi_index[si] < K, op, ": phi_index must lie in [0, K = ", K, "), got ",
                phi_index[si], " at scale ", si);
  }
}

}  // namespace var_fast::quant

namespace var_fast::quant_cpu {

// Unless said otherwise the helpers below take contiguous float32 tensors (int64 tokens) on the CPU,
// already checked by the op that calls them, and return or fill float32.

// A float32 codebook (V, C) laid out for nearest_code_f32 (built once, reused across calls).
struct PreparedCodebook {
  at::Tensor codes;         // (V, C) contiguous
  at::Tensor norms;         // (V,) |e|^2 from the same ATen reduction as the reference
  at::Tensor codes_t;       // (C, Vp) transposed, zero-padded to Vp = multiple of 16 codes
  at::Tensor norms_padded;  // (Vp,) norms, +inf on the padding codes
  float sqrt_norm_max = 0;  // sqrt(max |e|^2); NaN/inf when a norm is NaN/inf
};
PreparedCodebook prepare_codebook_f32(const at::Tensor& codebook);

// z (N, C) -> int64 (N,): torch.argmin of the reference's ||z||^2 + ||e||^2 - 2 z.e, token for token.
at::Tensor nearest_code_f32(const at::Tensor& z, const PreparedCodebook& book);

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

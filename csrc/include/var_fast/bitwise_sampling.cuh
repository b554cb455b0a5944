// Bitwise sampling of Infinity (sample_bits / sample_cfg_bits): each bit of each token is drawn from its
// own pair of logits (logit of bit 0, logit of bit 1), with upstream's temperature, CFG mix and top-k /
// top-p applied to the pair. Elementwise: one pass over the logits, no sort, no reduction.
//
// The first part of this header (host + device) is also compiled into csrc/cpu/bitwise_sampling.cpp: both
// devices run sample_group() below, the same float32 operations in the same order, so for the same logits
// they draw the same bits, bit for bit. The CUDA kernel is in the second part (CUDA compilers only: nvcc,
// or g++ with the CUDA emulator of tests/emu).
//
// Semantics (upstream Infinity 4c27bbb, autoregressive_infer_cfg; var_fast/infinity/reference_sampler.py):
//  * logits (N, L, 2D): pair d of token (n, l) is (x[2d], x[2d+1]). Values are read as float32 (bf16 and
//    fp16 inputs are upcast first) and scaled: x * float32(1 / tau) (upstream's `logits.mul(1 / tau)`).
//  * CFG (sample_cfg_bits): N = 2B, rows [0, B) conditional, [B, 2B) unconditional; the value is
//    float32(cfg) * c' + float32(1 - cfg) * u' with c', u' the scaled values, each product and the sum
//    rounded to float32 in that order (upstream: `cfg * logits[:B] + (1 - cfg) * logits[B:]`), never
//    fused into an FMA (mul_rn / add_rn).
//  * The pair (x0, x1) is sorted as torch's CPU sort orders it: bit 0 is the smaller one unless x1 < x0
//    (a tie, -0 == +0 included, puts bit 0 first). hi = the larger, lo = the smaller; weights
//    w(hi) = 1 = exp(0), w(lo) = e = exp(lo - hi) by exp_nonpositive (var_fast/sampling.cuh, ~1 ulp).
//  * top_k == 1 drops lo when lo < hi (upstream keeps the logits equal to the max: a tie keeps both and
//    draws them 1/2 each, as upstream's multinomial does); top_k == 0 or >= 2 keeps both.
//  * top_p in (0, 1) drops lo when its softmax probability e * (1 / (1 + e)) (torch's softmax order of
//    operations) is <= float32(1 - top_p) (upstream: sorted ascending, cumulative probability
//    <= 1 - top_p removed, the last one never): a tie (p = 1/2 exactly) drops bit 0 when top_p <= 1/2.
//    torch's exp differs from exp_nonpositive by an ulp or so, so a pair whose probability lies within
//    float32 rounding of 1 - top_p may be cut differently from upstream (tests exclude that band).
//  * Draw: u in [0, 1) from Philox4x32-10 (var_fast/philox.h) keyed by seed (lo32, hi32), counter
//    (image lo32, image hi32, l, d / 4), word d % 4, image = image_offset + b: a bit depends only on its
//    pair, the seed, its image's global index, its token and its position. thr = u * (w0 + w1); bit 0 iff
//    w0 > thr (the first index whose running sum exceeds thr, as the VAR sampling op draws). A dropped
//    bit has weight 0 and is never drawn.
//  * Bad pairs (after the mix: NaN, +inf, or both -inf) are errors: bit -1 and a flag
//    (var_fast/status_flags.h, with kSampleBits) that the op raises, or leaves in the caller's status word.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>

#include "var_fast/bitwise_sampling_launch.h"
#include "var_fast/check.h"
#include "var_fast/philox.h"
#include "var_fast/sampling.cuh"
#include "var_fast/status_flags.h"

namespace var_fast {
namespace bitwise_sampling {

using rounding::add_rn;
using rounding::div_rn;
using rounding::mul_rn;
using rounding::sub_rn;
using sampling::exp_nonpositive;

// The flags of a bad pair, 0 for a good one.
VAR_FAST_HOST_DEVICE int pair_flags(float x0, float x1) {
  constexpr float kInf = std::numeric_limits<float>::infinity();
  const bool nan = x0 != x0 || x1 != x1;
  const bool pos_inf = x0 == kInf || x1 == kInf;
  const bool all_neg_inf = x0 == -kInf && x1 == -kInf;
  return (nan ? status::kSampleNaN : 0) | (pos_inf ? status::kSamplePosInf : 0) |
         (all_neg_inf ? status::kSampleAllNegInf : 0);
}

// The bit drawn from the good pair (x0, x1) with uniform u (see the top of the file).
VAR_FAST_HOST_DEVICE int64_t draw_bit(float x0, float x1, bool greedy, bool top_p, float drop_at, float u) {
  const bool one_is_larger = !(x1 < x0);  // ties: bit 0 sorts first, so it is the smaller one
  const float hi = one_is_larger ? x1 : x0;
  const float lo = one_is_larger ? x0 : x1;
  float e = exp_nonpositive(sub_rn(lo, hi));  // the smaller's weight; the larger's is 1
  if (greedy && lo < hi) e = 0.0f;
  if (top_p && mul_rn(e, div_rn(1.0f, add_rn(e, 1.0f))) <= drop_at) e = 0.0f;
  const float w0 = one_is_larger ? e : 1.0f;
  const float thr = mul_rn(u, add_rn(e, 1.0f));
  return w0 > thr ? 0 : 1;
}

// Value v of a (conditional) row after the temperature and, with kCfg, the CFG mix.
template <typename scalar_t, bool kCfg>
VAR_FAST_HOST_DEVICE float bit_logit(const scalar_t* row, int64_t v, const BitsParams& p) {
  const float c = mul_rn(static_cast<float>(row[v * p.stride_v]), p.inv_tau);
  if constexpr (kCfg) {
    const float u = mul_rn(static_cast<float>(row[p.uncond_offset + v * p.stride_v]), p.inv_tau);
    return add_rn(mul_rn(p.w_cond, c), mul_rn(p.w_uncond, u));
  } else {
    return c;
  }
}

// Group g (< p.groups) of up to 4 bits: draws them into p.out; returns the flags of its bad pairs.
template <typename scalar_t, bool kCfg>
VAR_FAST_HOST_DEVICE int sample_group(const BitsParams& p, int64_t g) {
  const int64_t per_token = groups_per_token(p.D);
  const int64_t token = g / per_token;  // = b * L + l
  const int64_t first = (g - token * per_token) * kBitsPerGroup;
  const int64_t b = token / p.L, l = token - b * p.L;
  const scalar_t* row = static_cast<const scalar_t*>(p.logits) + b * p.stride_n + l * p.stride_l;
  const uint64_t image = p.image_offset + static_cast<uint64_t>(b);
  const Philox4x32 r = philox4x32_10(
      Philox4x32{{static_cast<uint32_t>(image), static_cast<uint32_t>(image >> 32), static_cast<uint32_t>(l),
                  static_cast<uint32_t>(first / kBitsPerGroup)}},
      static_cast<uint32_t>(p.seed), static_cast<uint32_t>(p.seed >> 32));
  int64_t* out = p.out + token * p.D + first;
  int flags = 0;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int k = 0; k < kBitsPerGroup; ++k) {
    if (first + k < p.D) {
      const float x0 = bit_logit<scalar_t, kCfg>(row, 2 * (first + k), p);
      const float x1 = bit_logit<scalar_t, kCfg>(row, 2 * (first + k) + 1, p);
      const int bad = pair_flags(x0, x1);
      flags |= bad;
      out[k] = bad != 0 ? -1 : draw_bit(x0, x1, p.greedy, p.top_p, p.drop_at, uniform_from_bits(r.v[k]));
    }
  }
  return flags;
}

// ---- host: argument checks shared by the CPU and CUDA launchers ----

// Checks the arguments (naming each) and returns the kernel parameters, all but out and status.
// B = the images of the output (B, L, D): N, or N / 2 with CFG.
inline BitsParams plan_bits(const char* op, const at::Tensor& logits, bool cfg, double cfg_scale, double tau,
                            int64_t top_k, double top_p, int64_t seed, int64_t image_offset, int64_t& B) {
  VF_CHECK_FLOATING(logits);
  TORCH_CHECK(logits.dim() == 3, op, ": logits must be 3-D ", cfg ? "(2B, L, 2D)" : "(B, L, 2D)", ", got shape ",
              logits.sizes());
  TORCH_CHECK(logits.size(2) >= 2 && logits.size(2) % 2 == 0, op,
              ": logits' last dim must hold D >= 1 pairs (logit of bit 0, logit of bit 1), an even size 2D, got shape ",
              logits.sizes());
  TORCH_CHECK(logits.size(1) <= std::numeric_limits<uint32_t>::max(), op, ": at most 2^32 - 1 tokens (L), got ",
              logits.size(1));
  if (cfg) {
    TORCH_CHECK(logits.size(0) % 2 == 0, op, ": logits must hold a CFG-doubled batch (2B, L, 2D) "
                "(conditional rows then unconditional rows), got an odd first dim: shape ", logits.sizes());
    TORCH_CHECK(std::isfinite(cfg_scale), op, ": cfg must be finite, got ", cfg_scale);
  }
  TORCH_CHECK(tau > 0.0 && std::isfinite(static_cast<float>(1.0 / tau)), op,
              ": tau must be > 0 with 1 / tau a finite float32, got ", tau);
  TORCH_CHECK(top_k >= 0, op, ": top_k must be >= 0 (0: no top-k), got ", top_k);
  TORCH_CHECK(top_p >= 0.0 && top_p <= 1.0, op, ": top_p must be in [0, 1] (0 or 1: no top-p), got ", top_p);
  TORCH_CHECK(image_offset >= 0, op, ": image_offset must be >= 0, got ", image_offset);
  B = cfg ? logits.size(0) / 2 : logits.size(0);
  BitsParams p{};
  p.logits = logits.const_data_ptr();
  p.stride_n = logits.stride(0);
  p.stride_l = logits.stride(1);
  p.stride_v = logits.stride(2);
  p.uncond_offset = B * p.stride_n;
  p.L = logits.size(1);
  p.D = logits.size(2) / 2;
  p.groups = B * p.L * groups_per_token(p.D);
  p.inv_tau = static_cast<float>(1.0 / tau);
  p.w_cond = static_cast<float>(cfg_scale);
  p.w_uncond = static_cast<float>(1.0 - cfg_scale);
  p.greedy = top_k == 1;
  p.top_p = top_p > 0.0 && top_p < 1.0;
  p.drop_at = static_cast<float>(1.0 - top_p);
  p.seed = static_cast<uint64_t>(seed);
  p.image_offset = static_cast<uint64_t>(image_offset);
  return p;
}

// The status word's flags of bad pairs found by one call (flags: or of the pair flags).
VAR_FAST_HOST_DEVICE int status_flags(bool cfg, int flags) {
  return flags == 0 ? 0 : flags | status::kSampleBits | (cfg ? status::kSampleCfg : 0);
}

// The two ops' entry points (schemas in op_schemas.h) over one device's sampler
// Sample(op, logits, cfg, cfg_scale, tau, top_k, top_p, seed, image_offset, status).
using SampleBitsFn = at::Tensor (*)(const char*, const at::Tensor&, bool, double, double, int64_t, double, int64_t,
                                    int64_t, const std::optional<at::Tensor>&);

template <SampleBitsFn Sample>
at::Tensor sample_bits_op(const at::Tensor& logits, double tau, int64_t top_k, double top_p, int64_t seed,
                          int64_t image_offset, const std::optional<at::Tensor>& status) {
  return Sample("sample_bits", logits, false, 1.0, tau, top_k, top_p, seed, image_offset, status);
}

template <SampleBitsFn Sample>
at::Tensor sample_cfg_bits_op(const at::Tensor& logits, double cfg, double tau, int64_t top_k, double top_p,
                              int64_t seed, int64_t image_offset, const std::optional<at::Tensor>& status) {
  return Sample("sample_cfg_bits", logits, true, cfg, tau, top_k, top_p, seed, image_offset, status);
}

}  // namespace bitwise_sampling
}  // namespace var_fast

#if defined(__CUDACC__)
namespace var_fast {
namespace bitwise_sampling {

template <typename scalar_t, bool kCfg>
__global__ void __launch_bounds__(kThreads) sample_bits_kernel(const BitsParams p) {
  const int64_t g = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (g >= p.groups) return;
  const int flags = sample_group<scalar_t, kCfg>(p, g);
  if (flags != 0) atomicOr(p.status, status_flags(kCfg, flags));
}

}  // namespace bitwise_sampling
}  // namespace var_fast
#endif  // __CUDACC__

// Host side of bsq_scale_update shared by the CPU op and the kernel-device launcher: argument checks,
// the code value of a bit, the output shape and which arithmetic of torch's CPU interpolation to follow.
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/MemoryOverlap.h>
#include <ATen/Version.h>
#include <ATen/ops/ones.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>

#include "var_fast/bsq_interp.h"
#include "var_fast/check.h"

namespace var_fast::bsq {

// The shapes of one call: bits (B, h, w, D) on the transformer's grid, codes (B, d, hv, wv) on the VAE's
// (patchify: D = 4d, hv = 2h, wv = 2w), summed codes (B, d, H, W), next grid (nh, nw) on the VAE's grid.
struct Shape {
  int64_t B, h, w, D, d, hv, wv, H, W, nh, nw;
  bool patchify;
  // The next input's (B, L, F): tokens of the transformer's next grid, features per token.
  int64_t next_tokens() const { return patchify ? (nh / 2) * (nw / 2) : nh * nw; }
  int64_t next_features() const { return patchify ? 4 * d : d; }
};

inline Shape check_args(const at::Tensor& bits, const at::Tensor& summed_codes, int64_t next_h, int64_t next_w,
                        bool patchify) {
  constexpr const char* op = "bsq_scale_update";
  TORCH_CHECK(bits.dim() == 4, op, ": bits must be 4-D (B, h, w, D), got shape ", bits.sizes());
  TORCH_CHECK(bits.scalar_type() == at::kLong, op, ": bits must be int64, got ", bits.scalar_type());
  TORCH_CHECK(summed_codes.dim() == 4, op, ": summed_codes must be 4-D (B, d, H, W), got shape ", summed_codes.sizes());
  TORCH_CHECK(summed_codes.scalar_type() == at::kFloat, op, ": summed_codes must be float32, got ",
              summed_codes.scalar_type());
  VF_CHECK_DEVICE(bits, summed_codes.device());
  TORCH_CHECK(at::has_internal_overlap(summed_codes) != at::MemOverlap::Yes, op,
              ": summed_codes is updated in place and must not have overlapping elements (e.g. an expand()ed "
              "tensor), got strides ", summed_codes.strides());
  Shape s{};
  s.patchify = patchify;
  s.B = bits.size(0), s.h = bits.size(1), s.w = bits.size(2), s.D = bits.size(3);
  s.H = summed_codes.size(2), s.W = summed_codes.size(3);
  TORCH_CHECK(s.B >= 1 && s.h >= 1 && s.w >= 1 && s.D >= 1, op, ": bits must not be empty, got shape ", bits.sizes());
  if (patchify) {
    TORCH_CHECK(s.D % 4 == 0, op, ": with patchify, bits' last dim holds 4 * d bits (2 x 2 VAE cells), got D = ", s.D);
    s.d = s.D / 4, s.hv = 2 * s.h, s.wv = 2 * s.w;
  } else {
    s.d = s.D, s.hv = s.h, s.wv = s.w;
  }
  TORCH_CHECK(summed_codes.size(0) == s.B && summed_codes.size(1) == s.d && s.H >= 1 && s.W >= 1, op,
              ": summed_codes must be (B, d, H, W) = (", s.B, ", ", s.d, ", H, W) with H, W >= 1 for bits of shape ",
              bits.sizes(), patchify ? " (patchify)" : "", ", got ", summed_codes.sizes());
  TORCH_CHECK(next_h >= 0 && next_w >= 0 && (next_h == 0) == (next_w == 0), op,
              ": next_h and next_w must both be >= 1, or both 0 (last scale), got ", next_h, " and ", next_w);
  TORCH_CHECK(!patchify || (next_h % 2 == 0 && next_w % 2 == 0), op,
              ": with patchify the next VAE grid must have even sides (pixel_unshuffle(2)), got ", next_h, " x ", next_w);
  s.nh = next_h, s.nw = next_w;
  return s;
}

// The value of a 1 bit (a 0 bit is its negative): BSQ.bits_to_codes of upstream, F.normalize(bits * s * 2 - s)
// with s = 1 / np.sqrt(d) in float64, computed with the same torch CPU ops on one row. Every code has d
// entries of the same magnitude, so one value per d; cached.
inline float code_value(int64_t d) {
  static std::mutex mutex;
  static std::unordered_map<int64_t, float> cache;
  const std::lock_guard<std::mutex> lock(mutex);
  if (const auto it = cache.find(d); it != cache.end()) return it->second;
  const double s = 1.0 / std::sqrt(static_cast<double>(d));
  const at::Tensor bits = at::ones({1, d}, at::TensorOptions().dtype(at::kLong));
  const at::Tensor codes = bits.mul(s).mul(2).sub(s);
  const at::Tensor denom = codes.norm(2, {-1}, /*keepdim=*/true).clamp_min(1e-12).expand_as(codes);
  const float value = codes.div(denom).select(0, 0).select(0, 0).item<float>();
  cache.emplace(d, value);
  return value;
}

// torch's CPU kernels fuse multiply-adds when built for AVX2/AVX512 (and measured so); its DEFAULT build
// (ATEN_CPU_CAPABILITY=default) rounds every product. torch names the capability it runs with
// ("DEFAULT", "AVX2", "AVX512", ...; torch.backends.cpu.get_cpu_capability()); read once.
inline Formula torch_cpu_formula() {
  static const bool fused = at::get_cpu_capability() != "DEFAULT";
  return Formula{fused};
}

}  // namespace var_fast::bsq

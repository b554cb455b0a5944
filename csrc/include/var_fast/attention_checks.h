// Input checks of qkv_to_cache and cached_attention, shared by the CPU and CUDA launchers (host only).
// `expected` is the device every tensor must be on: the CPU, or the CUDA device of the first input.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdint>
#include <optional>

#include "var_fast/check.h"

namespace var_fast::attention_checks {

constexpr int64_t kMaxHeadDim = 256;  // the CUDA kernels' register arrays (attention::kMaxHeadDim) size to it

inline void check_qkv_to_cache_inputs(const at::Tensor& qkv, const at::Tensor& q_bias, const at::Tensor& v_bias,
                                      const std::optional<at::Tensor>& head_scale, const at::Tensor& k_cache,
                                      const at::Tensor& v_cache, int64_t offset, const std::optional<at::Tensor>& rope,
                                      const at::Device& expected) {
  VF_CHECK_DEVICE(qkv, expected);
  VF_CHECK_DEVICE(q_bias, expected);
  VF_CHECK_DEVICE(v_bias, expected);
  VF_CHECK_DEVICE(k_cache, expected);
  VF_CHECK_DEVICE(v_cache, expected);
  VF_CHECK_FLOATING(qkv);
  VF_CHECK_SAME_DTYPE(q_bias, qkv);
  VF_CHECK_SAME_DTYPE(v_bias, qkv);
  VF_CHECK_SAME_DTYPE(k_cache, qkv);
  VF_CHECK_SAME_DTYPE(v_cache, qkv);
  VF_CHECK_DIM(qkv, 3);
  VF_CHECK_DIM(k_cache, 4);
  TORCH_CHECK(v_cache.sizes() == k_cache.sizes(), "v_cache must have the shape of k_cache ", k_cache.sizes(),
              ", got ", v_cache.sizes());
  const int64_t B = qkv.size(0), L = qkv.size(1);
  const int64_t H = k_cache.size(1), Lmax = k_cache.size(2), c = k_cache.size(3), C = H * c;
  TORCH_CHECK(k_cache.size(0) == B, "k_cache must have batch ", B, " (qkv's), got shape ", k_cache.sizes());
  TORCH_CHECK(c >= 1 && c <= kMaxHeadDim, "head dim (k_cache.size(3)) must be in [1, ", kMaxHeadDim, "], got ", c);
  TORCH_CHECK(qkv.size(2) == 3 * C, "qkv must have last dim 3 * H * c = ", 3 * C, " (H, c from k_cache ",
              k_cache.sizes(), "), got ", qkv.sizes());
  TORCH_CHECK(q_bias.dim() == 1 && q_bias.size(0) == C, "q_bias must have shape (", C, ",), got ", q_bias.sizes());
  TORCH_CHECK(v_bias.dim() == 1 && v_bias.size(0) == C, "v_bias must have shape (", C, ",), got ", v_bias.sizes());
  TORCH_CHECK(offset >= 0 && offset + L <= Lmax, "offset + L must lie in [0, Lmax]: offset ", offset, " + L ", L,
              " > Lmax ", Lmax, " (k_cache ", k_cache.sizes(), ")");
  if (head_scale.has_value()) {
    const auto hs_dtype = head_scale->scalar_type();
    TORCH_CHECK(head_scale->device() == expected, "head_scale must be on ", expected, ", got ", head_scale->device());
    TORCH_CHECK(hs_dtype == at::kFloat || hs_dtype == at::kHalf || hs_dtype == at::kBFloat16,
                "head_scale must be float32, float16 or bfloat16, got ", hs_dtype);
    TORCH_CHECK(head_scale->numel() == H, "head_scale must hold one value per head (H = ", H,
                "), as (H,) or (1, H, 1, 1); got shape ", head_scale->sizes());
  }
  if (rope.has_value()) {  // (2, L, c/2) float32: cos and sin of each position's c/2 rotation angles
    TORCH_CHECK(rope->device() == expected, "rope must be on ", expected, ", got ", rope->device());
    TORCH_CHECK(rope->scalar_type() == at::kFloat, "rope must be float32 (cos, sin), got ", rope->scalar_type());
    TORCH_CHECK(c % 2 == 0, "rope rotates pairs of head dims: the head dim (k_cache.size(3)) must be even, got ", c);
    TORCH_CHECK(rope->dim() == 3 && rope->size(0) == 2 && rope->size(1) == L && rope->size(2) == c / 2,
                "rope must have shape (2, L, c/2) = (2, ", L, ", ", c / 2, ") (cos, sin of qkv's L positions), got ",
                rope->sizes());
  }
}

inline void check_cached_attention_inputs(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                                          int64_t kv_len, double scale, const at::Device& expected) {
  VF_CHECK_DEVICE(q, expected);
  VF_CHECK_DEVICE(k_cache, expected);
  VF_CHECK_DEVICE(v_cache, expected);
  VF_CHECK_FLOATING(q);
  VF_CHECK_SAME_DTYPE(k_cache, q);
  VF_CHECK_SAME_DTYPE(v_cache, q);
  VF_CHECK_DIM(q, 4);
  VF_CHECK_DIM(k_cache, 4);
  TORCH_CHECK(v_cache.sizes() == k_cache.sizes(), "v_cache must have the shape of k_cache ", k_cache.sizes(),
              ", got ", v_cache.sizes());
  const int64_t B = q.size(0), H = q.size(1), c = q.size(3), Lmax = k_cache.size(2);
  TORCH_CHECK(k_cache.size(0) == B && k_cache.size(1) == H && k_cache.size(3) == c,
              "k_cache must have shape (B, H, Lmax, c) with (B, H, c) = (", B, ", ", H, ", ", c, ") from q, got ",
              k_cache.sizes());
  TORCH_CHECK(c >= 1 && c <= kMaxHeadDim, "head dim (q.size(3)) must be in [1, ", kMaxHeadDim, "], got ", c);
  TORCH_CHECK(kv_len >= 1 && kv_len <= Lmax, "kv_len must be in [1, Lmax = ", Lmax, "], got ", kv_len);
  TORCH_CHECK(std::isfinite(scale), "scale must be finite, got ", scale);
}

}  // namespace var_fast::attention_checks

// The attention ops of one VAR block on CPU:
//   qkv_to_cache     - QKV epilogue: biases, optional per-head L2 norm, k/v written into preallocated caches;
//   cached_attention - softmax(scale q k^T) v over the cached keys, flash-style (online softmax, float32).
#include <ATen/Dispatch.h>
#include <ATen/MemoryOverlap.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <vector>

#include "var_fast/check.h"

namespace var_fast {
namespace {

constexpr int64_t kMaxHeadDim = 256;

// ---------------------------------------------------------------------------------------------------
// qkv_to_cache
// ---------------------------------------------------------------------------------------------------
struct CacheLayout {
  int64_t sb, sh, sl, sd;  // element strides of a (B, H, Lmax, c) cache
  explicit CacheLayout(const at::Tensor& t) : sb(t.stride(0)), sh(t.stride(1)), sl(t.stride(2)), sd(t.stride(3)) {}
  int64_t at(int64_t b, int64_t h, int64_t l) const { return b * sb + h * sh + l * sl; }
};

inline float l2_norm_clamped(const float* v, int64_t n) {
  float sq = 0.f;
  for (int64_t j = 0; j < n; ++j) sq += v[j] * v[j];
  return std::max(std::sqrt(sq), 1e-12f);  // F.normalize: x / max(||x||, eps)
}

template <typename scalar_t>
void qkv_to_cache_rows(const scalar_t* qkv, const scalar_t* q_bias, const scalar_t* v_bias, const float* head_scale,
                       scalar_t* q_out, scalar_t* k_cache, CacheLayout kl, scalar_t* v_cache, CacheLayout vl,
                       int64_t B, int64_t L, int64_t H, int64_t c, int64_t offset) {
  const int64_t C = H * c;
  const int64_t grain = std::max<int64_t>(1, 4096 / (3 * C));
  at::parallel_for(0, B * L, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> q(c), k(c), v(c);
    for (int64_t bl = begin; bl < end; ++bl) {
      const int64_t b = bl / L, l = bl % L;
      for (int64_t h = 0; h < H; ++h) {
        const scalar_t* row = qkv + bl * 3 * C + h * c;
        const scalar_t* qb = q_bias + h * c;
        const scalar_t* vb = v_bias + h * c;
        for (int64_t j = 0; j < c; ++j) {
          q[j] = static_cast<float>(row[j]) + static_cast<float>(qb[j]);
          k[j] = static_cast<float>(row[C + j]);
          v[j] = static_cast<float>(row[2 * C + j]) + static_cast<float>(vb[j]);
        }
        if (head_scale != nullptr) {
          const float q_norm = l2_norm_clamped(q.data(), c), k_norm = l2_norm_clamped(k.data(), c);
          const float hs = head_scale[h];
          for (int64_t j = 0; j < c; ++j) {
            q[j] = q[j] / q_norm * hs;
            k[j] = k[j] / k_norm;
          }
        }
        scalar_t* qo = q_out + ((b * H + h) * L + l) * c;
        scalar_t* ko = k_cache + kl.at(b, h, offset + l);
        scalar_t* vo = v_cache + vl.at(b, h, offset + l);
        for (int64_t j = 0; j < c; ++j) {
          qo[j] = static_cast<scalar_t>(q[j]);
          ko[j * kl.sd] = static_cast<scalar_t>(k[j]);
          vo[j * vl.sd] = static_cast<scalar_t>(v[j]);
        }
      }
    }
  });
}

at::Tensor qkv_to_cache_cpu(const at::Tensor& qkv, const at::Tensor& q_bias, const at::Tensor& v_bias,
                            const std::optional<at::Tensor>& head_scale, at::Tensor& k_cache, at::Tensor& v_cache,
                            int64_t offset) {
  const at::Device cpu(at::kCPU);
  VF_CHECK_DEVICE(qkv, cpu);
  VF_CHECK_DEVICE(q_bias, cpu);
  VF_CHECK_DEVICE(v_bias, cpu);
  VF_CHECK_DEVICE(k_cache, cpu);
  VF_CHECK_DEVICE(v_cache, cpu);
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
    TORCH_CHECK(head_scale->device() == cpu, "head_scale must be on ", cpu, ", got ", head_scale->device());
    TORCH_CHECK(hs_dtype == at::kFloat || hs_dtype == at::kHalf || hs_dtype == at::kBFloat16,
                "head_scale must be float32, float16 or bfloat16, got ", hs_dtype);
    TORCH_CHECK(head_scale->numel() == H, "head_scale must hold one value per head (H = ", H,
                "), as (H,) or (1, H, 1, 1); got shape ", head_scale->sizes());
  }
  at::assert_no_internal_overlap(k_cache);
  at::assert_no_internal_overlap(v_cache);
  at::assert_no_overlap(k_cache, v_cache);

  auto q = at::empty({B, H, L, c}, qkv.options());
  if (q.numel() == 0) return q;
  const auto qkv_c = qkv.contiguous();
  const auto q_bias_c = q_bias.contiguous();
  const auto v_bias_c = v_bias.contiguous();
  std::optional<at::Tensor> head_scale_f;
  if (head_scale.has_value()) head_scale_f = head_scale->reshape({H}).to(at::kFloat).contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, qkv.scalar_type(), "qkv_to_cache_cpu", [&] {
    qkv_to_cache_rows<scalar_t>(qkv_c.const_data_ptr<scalar_t>(), q_bias_c.const_data_ptr<scalar_t>(),
                                v_bias_c.const_data_ptr<scalar_t>(),
                                head_scale_f ? head_scale_f->const_data_ptr<float>() : nullptr,
                                q.mutable_data_ptr<scalar_t>(), k_cache.mutable_data_ptr<scalar_t>(),
                                CacheLayout(k_cache), v_cache.mutable_data_ptr<scalar_t>(), CacheLayout(v_cache), B, L,
                                H, c, offset);
  });
  return q;
}

// ---------------------------------------------------------------------------------------------------
// cached_attention
// ---------------------------------------------------------------------------------------------------
constexpr int64_t kQueryBlock = 32;  // queries sharing one float32 copy of a key/value block
constexpr int64_t kKeyBlock = 64;    // keys per online-softmax step

template <typename scalar_t>
void cached_attention_blocks(const scalar_t* q, const scalar_t* k, CacheLayout kl, const scalar_t* v, CacheLayout vl,
                             scalar_t* out, int64_t B, int64_t H, int64_t L, int64_t c, int64_t kv_len, float scale) {
  const int64_t n_qblocks = (L + kQueryBlock - 1) / kQueryBlock;
  at::parallel_for(0, B * H * n_qblocks, 1, [&](int64_t begin, int64_t end) {
    // Per-thread float32 buffers. The key block is stored transposed (c, kKeyBlock) so that the
    // score loop runs over keys with unit stride; padding keys are zero and masked to -inf.
    std::vector<float> qf(kQueryBlock * c), acc(kQueryBlock * c), kt(c * kKeyBlock), vf(kKeyBlock * c);
    std::vector<float> row_max(kQueryBlock), row_sum(kQueryBlock);
    float s[kKeyBlock];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t qblock = task % n_qblocks, bh = task / n_qblocks;
      const int64_t h = bh % H, b = bh / H;
      const int64_t q0 = qblock * kQueryBlock, nq = std::min(kQueryBlock, L - q0);
      const scalar_t* qrows = q + (bh * L + q0) * c;
      for (int64_t i = 0; i < nq * c; ++i) qf[i] = static_cast<float>(qrows[i]) * scale;
      std::fill(acc.begin(), acc.begin() + nq * c, 0.f);
      std::fill(row_max.begin(), row_max.end(), -std::numeric_limits<float>::infinity());
      std::fill(row_sum.begin(), row_sum.end(), 0.f);

      for (int64_t k0 = 0; k0 < kv_len; k0 += kKeyBlock) {
        const int64_t nk = std::min(kKeyBlock, kv_len - k0);
        for (int64_t j = 0; j < kKeyBlock; ++j) {
          if (j < nk) {
            const scalar_t* kr = k + kl.at(b, h, k0 + j);
            const scalar_t* vr = v + vl.at(b, h, k0 + j);
            for (int64_t d = 0; d < c; ++d) {
              kt[d * kKeyBlock + j] = static_cast<float>(kr[d]);
              vf[j * c + d] = static_cast<float>(vr[d]);
            }
          } else {
            for (int64_t d = 0; d < c; ++d) kt[d * kKeyBlock + j] = 0.f;
          }
        }
        for (int64_t i = 0; i < nq; ++i) {
          const float* qi = qf.data() + i * c;
          for (int64_t j = 0; j < kKeyBlock; ++j) s[j] = 0.f;
          for (int64_t d = 0; d < c; ++d) {
            const float qd = qi[d];
            const float* kd = kt.data() + d * kKeyBlock;
            for (int64_t j = 0; j < kKeyBlock; ++j) s[j] += qd * kd[j];
          }
          float block_max = s[0];
          for (int64_t j = 1; j < nk; ++j) block_max = std::max(block_max, s[j]);
          const float new_max = std::max(row_max[i], block_max);
          const float rescale = std::exp(row_max[i] - new_max);  // 0 on the first block (max was -inf)
          float block_sum = 0.f;
          for (int64_t j = 0; j < nk; ++j) {
            s[j] = std::exp(s[j] - new_max);
            block_sum += s[j];
          }
          row_sum[i] = row_sum[i] * rescale + block_sum;
          row_max[i] = new_max;
          float* ai = acc.data() + i * c;
          for (int64_t d = 0; d < c; ++d) ai[d] *= rescale;
          for (int64_t j = 0; j < nk; ++j) {
            const float p = s[j];
            const float* vj = vf.data() + j * c;
            for (int64_t d = 0; d < c; ++d) ai[d] += p * vj[d];
          }
        }
      }
      for (int64_t i = 0; i < nq; ++i) {
        const float inv_sum = 1.f / row_sum[i];
        const float* ai = acc.data() + i * c;
        scalar_t* o = out + ((b * L + q0 + i) * H + h) * c;
        for (int64_t d = 0; d < c; ++d) o[d] = static_cast<scalar_t>(ai[d] * inv_sum);
      }
    }
  });
}

at::Tensor cached_attention_cpu(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                                int64_t kv_len, double scale) {
  const at::Device cpu(at::kCPU);
  VF_CHECK_DEVICE(q, cpu);
  VF_CHECK_DEVICE(k_cache, cpu);
  VF_CHECK_DEVICE(v_cache, cpu);
  VF_CHECK_FLOATING(q);
  VF_CHECK_SAME_DTYPE(k_cache, q);
  VF_CHECK_SAME_DTYPE(v_cache, q);
  VF_CHECK_DIM(q, 4);
  VF_CHECK_DIM(k_cache, 4);
  TORCH_CHECK(v_cache.sizes() == k_cache.sizes(), "v_cache must have the shape of k_cache ", k_cache.sizes(),
              ", got ", v_cache.sizes());
  const int64_t B = q.size(0), H = q.size(1), L = q.size(2), c = q.size(3), Lmax = k_cache.size(2);
  TORCH_CHECK(k_cache.size(0) == B && k_cache.size(1) == H && k_cache.size(3) == c,
              "k_cache must have shape (B, H, Lmax, c) with (B, H, c) = (", B, ", ", H, ", ", c, ") from q, got ",
              k_cache.sizes());
  TORCH_CHECK(c >= 1 && c <= kMaxHeadDim, "head dim (q.size(3)) must be in [1, ", kMaxHeadDim, "], got ", c);
  TORCH_CHECK(kv_len >= 1 && kv_len <= Lmax, "kv_len must be in [1, Lmax = ", Lmax, "], got ", kv_len);
  TORCH_CHECK(std::isfinite(scale), "scale must be finite, got ", scale);

  auto out = at::empty({B, L, H * c}, q.options());
  if (out.numel() == 0) return out;
  const auto qc = q.contiguous();
  // The kernel reads cache rows with unit stride; other layouts get a compact copy of the used part.
  const auto rows_of = [&](const at::Tensor& cache) {
    return cache.stride(3) == 1 ? cache : cache.narrow(2, 0, kv_len).contiguous();
  };
  const auto k = rows_of(k_cache), v = rows_of(v_cache);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "cached_attention_cpu", [&] {
    cached_attention_blocks<scalar_t>(qc.const_data_ptr<scalar_t>(), k.const_data_ptr<scalar_t>(), CacheLayout(k),
                                      v.const_data_ptr<scalar_t>(), CacheLayout(v), out.mutable_data_ptr<scalar_t>(),
                                      B, H, L, c, kv_len, static_cast<float>(scale));
  });
  return out;
}

}  // namespace
}  // namespace var_fast

TORCH_LIBRARY_IMPL(var_fast, CPU, m) {
  m.impl("qkv_to_cache", &var_fast::qkv_to_cache_cpu);
  m.impl("cached_attention", &var_fast::cached_attention_cpu);
}

// The attention ops of one VAR block on CPU:
//   qkv_to_cache     - QKV epilogue: biases, optional per-head L2 norm, optional RoPE (Infinity), k/v written
//                      into preallocated caches;
//   cached_attention - softmax(scale q k^T) v over the cached keys, flash-style (online softmax, float32).
#include <ATen/Dispatch.h>
#include <ATen/MemoryOverlap.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <vector>

#include "var_fast/attention_checks.h"

namespace var_fast {
namespace {

constexpr int64_t kMaxHeadDim = attention_checks::kMaxHeadDim;  // register arrays of one row

// ---------------------------------------------------------------------------------------------------
// qkv_to_cache
// ---------------------------------------------------------------------------------------------------
struct CacheLayout {
  int64_t sb, sh, sl, sd;  // element strides of a (B, H, Lmax, c) cache
  explicit CacheLayout(const at::Tensor& t) : sb(t.stride(0)), sh(t.stride(1)), sl(t.stride(2)), sd(t.stride(3)) {}
  int64_t at(int64_t b, int64_t h, int64_t l) const { return b * sb + h * sh + l * sl; }
};

// ||v|| clamped below at 1e-12 as F.normalize does; eight partial sums so that the loop vectorizes.
inline float l2_norm_clamped(const float* v, int64_t n) {
  constexpr int64_t kLanes = 8;
  float lanes[kLanes] = {};
  const int64_t body = n - n % kLanes;
  for (int64_t j = 0; j < body; j += kLanes)
    for (int64_t i = 0; i < kLanes; ++i) lanes[i] += v[j + i] * v[j + i];
  float sq = 0.f;
  for (int64_t i = 0; i < kLanes; ++i) sq += lanes[i];
  for (int64_t j = body; j < n; ++j) sq += v[j] * v[j];
  return std::max(std::sqrt(sq), 1e-12f);
}

template <typename scalar_t>
inline void store_row(scalar_t* dst, int64_t stride, const float* src, int64_t n) {
  if (stride == 1) {  // the usual cache layout: a plain, vectorizable copy
    for (int64_t j = 0; j < n; ++j) dst[j] = static_cast<scalar_t>(src[j]);
  } else {
    for (int64_t j = 0; j < n; ++j) dst[j * stride] = static_cast<scalar_t>(src[j]);
  }
}

// The (2, L, c/2) float32 cos/sin table of qkv_to_cache's rope argument, any strides.
struct RopeTable {
  const float* data = nullptr;  // null: no rotation
  int64_t s_sin = 0, s_l = 0, s_i = 0;
  const float* cos(int64_t l) const { return data + l * s_l; }
  const float* sin(int64_t l) const { return data + s_sin + l * s_l; }
};

// Rotates the pairs (x[2i], x[2i+1]) by the angles of one position with upstream's float32 ops, each rounded
// (the build has -ffp-contract=off): (cos*x0 - sin*x1, sin*x0 + cos*x1) as rope2d.apply_rope computes them.
inline void rotate_pairs(float* x, const float* cos, const float* sin, int64_t s_i, int64_t half) {
  for (int64_t i = 0; i < half; ++i) {
    const float x0 = x[2 * i], x1 = x[2 * i + 1], co = cos[i * s_i], si = sin[i * s_i];
    x[2 * i] = co * x0 - si * x1;
    x[2 * i + 1] = si * x0 + co * x1;
  }
}

template <typename scalar_t>
void qkv_to_cache_rows(const scalar_t* qkv, const scalar_t* q_bias, const scalar_t* v_bias, const float* head_scale,
                       RopeTable rope, scalar_t* q_out, scalar_t* k_cache, CacheLayout kl, scalar_t* v_cache,
                       CacheLayout vl, int64_t B, int64_t L, int64_t H, int64_t c, int64_t offset) {
  const int64_t C = H * c;
  const int64_t grain = std::max<int64_t>(1, 32768 / (3 * C));  // rows per task: ~32K elements
  at::parallel_for(0, B * L, grain, [&](int64_t begin, int64_t end) {
    float q[kMaxHeadDim], k[kMaxHeadDim], v[kMaxHeadDim];  // local: no aliasing with the tensors
    for (int64_t bl = begin; bl < end; ++bl) {
      const int64_t b = bl / L, l = bl % L;
      for (int64_t h = 0; h < H; ++h) {
        const scalar_t* row = qkv + bl * 3 * C + h * c;
        const scalar_t* qb = q_bias + h * c;
        const scalar_t* vb = v_bias + h * c;
        scalar_t* qo = q_out + ((b * H + h) * L + l) * c;
        scalar_t* ko = k_cache + kl.at(b, h, offset + l);
        scalar_t* vo = v_cache + vl.at(b, h, offset + l);
        if (head_scale == nullptr && rope.data == nullptr && kl.sd == 1 && vl.sd == 1) {  // plain copies with the biases added
          for (int64_t j = 0; j < c; ++j)
            qo[j] = static_cast<scalar_t>(static_cast<float>(row[j]) + static_cast<float>(qb[j]));
          for (int64_t j = 0; j < c; ++j) ko[j] = row[C + j];
          for (int64_t j = 0; j < c; ++j)
            vo[j] = static_cast<scalar_t>(static_cast<float>(row[2 * C + j]) + static_cast<float>(vb[j]));
          continue;
        }
        for (int64_t j = 0; j < c; ++j) {
          q[j] = static_cast<float>(row[j]) + static_cast<float>(qb[j]);
          k[j] = static_cast<float>(row[C + j]);
          v[j] = static_cast<float>(row[2 * C + j]) + static_cast<float>(vb[j]);
        }
        if (head_scale != nullptr) {
          const float q_mul = head_scale[h] / l2_norm_clamped(q, c), k_mul = 1.f / l2_norm_clamped(k, c);
          for (int64_t j = 0; j < c; ++j) {
            q[j] *= q_mul;
            k[j] *= k_mul;
          }
        }
        if (rope.data != nullptr) {
          rotate_pairs(q, rope.cos(l), rope.sin(l), rope.s_i, c / 2);
          rotate_pairs(k, rope.cos(l), rope.sin(l), rope.s_i, c / 2);
        }
        store_row(qo, 1, q, c);
        store_row(ko, kl.sd, k, c);
        store_row(vo, vl.sd, v, c);
      }
    }
  });
}

at::Tensor qkv_to_cache_cpu(const at::Tensor& qkv, const at::Tensor& q_bias, const at::Tensor& v_bias,
                            const std::optional<at::Tensor>& head_scale, at::Tensor& k_cache, at::Tensor& v_cache,
                            int64_t offset, const std::optional<at::Tensor>& rope) {
  attention_checks::check_qkv_to_cache_inputs(qkv, q_bias, v_bias, head_scale, k_cache, v_cache, offset, rope,
                                              at::Device(at::kCPU));
  const int64_t B = qkv.size(0), L = qkv.size(1), H = k_cache.size(1), c = k_cache.size(3);
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
  RopeTable rope_table;
  if (rope.has_value())
    rope_table = {rope->const_data_ptr<float>(), rope->stride(0), rope->stride(1), rope->stride(2)};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, qkv.scalar_type(), "qkv_to_cache_cpu", [&] {
    qkv_to_cache_rows<scalar_t>(qkv_c.const_data_ptr<scalar_t>(), q_bias_c.const_data_ptr<scalar_t>(),
                                v_bias_c.const_data_ptr<scalar_t>(),
                                head_scale_f ? head_scale_f->const_data_ptr<float>() : nullptr, rope_table,
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

// The two inner products of one query against one key block, on float32 buffers:
//   scores:     s[j] = sum_d q[d] * kt[d * kKeyBlock + j] for all kKeyBlock keys (kt: the block transposed)
//   accumulate: acc[d] = acc[d] * rescale + sum_{j < nk} p[j] * v[j * c + d]
// The portable versions are plain loops that the compiler vectorizes for the build's baseline ISA.
void scores_portable(const float* q, const float* kt, int64_t c, float* s) {
  for (int64_t j = 0; j < kKeyBlock; ++j) s[j] = 0.f;
  for (int64_t d = 0; d < c; ++d) {
    const float qd = q[d];
    const float* kd = kt + d * kKeyBlock;
    for (int64_t j = 0; j < kKeyBlock; ++j) s[j] += qd * kd[j];
  }
}

void accumulate_portable(float* acc, float rescale, const float* p, int64_t nk, const float* v, int64_t c) {
  for (int64_t d = 0; d < c; ++d) acc[d] *= rescale;
  for (int64_t j = 0; j < nk; ++j) {
    const float pj = p[j];
    const float* vj = v + j * c;
    for (int64_t d = 0; d < c; ++d) acc[d] += pj * vj[d];
  }
}

#if defined(__GNUC__) && defined(__x86_64__)
// AVX2 + FMA versions, picked at run time: the accumulators stay in eight 8-float registers
// (GCC/Clang vector extensions), which the portable loops cannot guarantee.
#define VAR_FAST_AVX2_KERNELS 1
typedef float Float8 __attribute__((vector_size(32)));

__attribute__((target("avx2,fma"))) void scores_avx2(const float* q, const float* kt, int64_t c, float* s) {
  constexpr int kRegs = kKeyBlock / 8;
  Float8 t[kRegs] = {};
  for (int64_t d = 0; d < c; ++d) {
    const Float8 qd = Float8{} + q[d];
    const float* kd = kt + d * kKeyBlock;
    for (int r = 0; r < kRegs; ++r) {
      Float8 kr;
      std::memcpy(&kr, kd + 8 * r, sizeof(kr));
      t[r] += qd * kr;
    }
  }
  std::memcpy(s, t, sizeof(t));
}

__attribute__((target("avx2,fma"))) void accumulate_avx2(float* acc, float rescale, const float* p, int64_t nk,
                                                         const float* v, int64_t c) {
  constexpr int kRegs = 8;
  int64_t d0 = 0;
  for (; d0 + 8 * kRegs <= c; d0 += 8 * kRegs) {
    Float8 o[kRegs];
    std::memcpy(o, acc + d0, sizeof(o));
    for (int r = 0; r < kRegs; ++r) o[r] *= rescale;
    for (int64_t j = 0; j < nk; ++j) {
      const Float8 pj = Float8{} + p[j];
      const float* vj = v + j * c + d0;
      for (int r = 0; r < kRegs; ++r) {
        Float8 vr;
        std::memcpy(&vr, vj + 8 * r, sizeof(vr));
        o[r] += pj * vr;
      }
    }
    std::memcpy(acc + d0, o, sizeof(o));
  }
  if (d0 < c) {  // head dims that are not a multiple of 64
    for (int64_t d = d0; d < c; ++d) acc[d] *= rescale;
    for (int64_t j = 0; j < nk; ++j) {
      const float pj = p[j];
      const float* vj = v + j * c;
      for (int64_t d = d0; d < c; ++d) acc[d] += pj * vj[d];
    }
  }
}
#endif

struct InnerKernels {
  void (*scores)(const float*, const float*, int64_t, float*);
  void (*accumulate)(float*, float, const float*, int64_t, const float*, int64_t);
};

// VAR_FAST_CPU_PORTABLE=1 forces the portable loops (tests use it to cover both versions).
InnerKernels inner_kernels() {
#ifdef VAR_FAST_AVX2_KERNELS
  static const bool has_avx2 = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  const char* portable = std::getenv("VAR_FAST_CPU_PORTABLE");
  if (has_avx2 && !(portable != nullptr && portable[0] == '1')) return {scores_avx2, accumulate_avx2};
#endif
  return {scores_portable, accumulate_portable};
}

template <typename scalar_t>
void cached_attention_blocks(const scalar_t* q, const scalar_t* k, CacheLayout kl, const scalar_t* v, CacheLayout vl,
                             scalar_t* out, int64_t B, int64_t H, int64_t L, int64_t c, int64_t kv_len, float scale) {
  const InnerKernels kernels = inner_kernels();
  const int64_t n_qblocks = (L + kQueryBlock - 1) / kQueryBlock;
  // Tasks of at least ~64K multiply-adds, so that tiny problems (the first scales) stay on one thread.
  const int64_t task_work = std::min(L, kQueryBlock) * kv_len * c;
  const int64_t grain = std::max<int64_t>(1, 65536 / task_work);
  at::parallel_for(0, B * H * n_qblocks, grain, [&](int64_t begin, int64_t end) {
    // Per-thread float32 buffers. The key block is stored transposed (c, kKeyBlock) so that the
    // score loop runs over keys with unit stride; padding keys are zero and never enter the softmax.
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
          kernels.scores(qf.data() + i * c, kt.data(), c, s);
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
          kernels.accumulate(acc.data() + i * c, rescale, s, nk, vf.data(), c);
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
  attention_checks::check_cached_attention_inputs(q, k_cache, v_cache, kv_len, scale, at::Device(at::kCPU));
  const int64_t B = q.size(0), H = q.size(1), L = q.size(2), c = q.size(3);

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

// Fused CFG + top-k + top-p sampling: one row of logits -> one token, without sorting the vocabulary.
//
// The first part of this header (host + device) is also compiled into csrc/cpu/sampling.cpp: CPU and
// CUDA kernels run the same float32 arithmetic in the same order, so for the same float32 row they
// keep the same tokens and draw the same token, bit for bit. The CUDA kernel is in the second part
// (CUDA compilers only: nvcc, or g++ with the CUDA emulator of tests/emu); the CPU loops are in
// csrc/cpu/sampling.cpp.
//
// Semantics of one row x[0..V) (after the CFG mix (1+g)*cond - g*uncond, in float32):
//  * m = max x; weights w_i = exp(x_i - m) by exp_nonpositive() (w = 1 exactly at the max; weights
//    below e^-87 are flushed to 0: such tokens can never be drawn, as in a float32 softmax).
//  * Values are compared through order_key() (-0 and +0 are one value). Every threshold below is
//    "keep all tokens whose value is >= t", so tokens tied with a threshold value are all kept.
//  * top-k (0 < k < V): t_k = the k-th largest value counted with multiplicity, i.e. the largest
//    value t with #{i : x_i >= t} >= k (upstream: `x < topk(x, k).min()` is removed).
//  * top-p (0 < p < 1), on the tokens kept by top-k: W = mass(t_k) where mass(t) is the sum of w_i
//    over x_i >= t, taken in the canonical order below. t_p = the largest value t with
//    mass(t) >= c, c = float(p * double(W)). Equivalently token i is kept iff the mass of the tokens
//    whose logit is strictly larger than x_i is < c: the smallest top set that reaches probability
//    p, plus every token tied with its last one. Without ties this is exactly upstream's rule (sort
//    ascending, drop cumulative probability <= 1 - p, keep the top one); at a tie upstream keeps an
//    arbitrary part of the tied group, we keep all of it. The top token is always kept.
//  * Draw: u = philox_row_uniform(seed, row_offset + row) in [0, 1), thr = u * mass(t_p) (the kept
//    mass); the token is the first kept index i with w_i > 0 (index order) whose running sum of kept
//    weights exceeds thr. The running sum is defined tile by tile (256 consecutive indices): carry +=
//    tile sum (the canonical tree) until carry exceeds thr; inside that tile, carry + the canonical
//    tile scan (block_tile_scan). If rounding leaves no such index inside the crossing tile, its last
//    kept index with w > 0 is taken; if no tile crosses, the last kept index with w > 0 of the row.
//  * Canonical order of a row sum: lane t (t < 256) adds the values at i = t, t + 256, ... in order;
//    the 256 lane sums are added pairwise inside each group of 32 lanes (strides 16, 8, 4, 2, 1),
//    then the 8 group sums (strides 4, 2, 1): the CUDA block's warp-shuffle reduction. Excluded
//    tokens add 0, so mass(t) is non-increasing in t also in float32 and t_p is unique: the CUDA
//    bisection and the CPU's candidate-list search find the same threshold.
//  * Rows with NaN, +inf, or only -inf logits are errors: token -1 and a flag (var_fast/status_flags.h)
//    that the op raises as an error, or leaves in the caller's status word for check_status.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>

#include "var_fast/check.h"
#include "var_fast/float_rounding.h"
#include "var_fast/philox.h"
#include "var_fast/sampling_launch.h"
#include "var_fast/status_flags.h"

namespace var_fast {
namespace sampling {

// Row flags (bitwise or), reported as errors.
constexpr int kFlagNaN = status::kSampleNaN;
constexpr int kFlagPosInf = status::kSamplePosInf;
constexpr int kFlagAllNegInf = status::kSampleAllNegInf;

// Products nvcc must not fuse into an FMA with a following add, so that host and device round identically.
using rounding::add_rn;
using rounding::mul_rn;
using rounding::sub_rn;

VAR_FAST_HOST_DEVICE uint32_t float_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t u;
  std::memcpy(&u, &x, sizeof(u));
  return u;
#endif
}

VAR_FAST_HOST_DEVICE float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float x;
  std::memcpy(&x, &u, sizeof(x));
  return x;
#endif
}

// Monotone map of non-NaN floats onto uint32 (x < y <=> key(x) < key(y)); -0 maps to +0's key.
VAR_FAST_HOST_DEVICE uint32_t order_key(float x) {
  const uint32_t u = float_bits(x == 0.0f ? 0.0f : x);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// (1 + g) * cond - g * uncond with the weights (float)(1 + g) and (float)g, as torch computes it.
VAR_FAST_HOST_DEVICE float cfg_mix(float cond, float uncond, float w_cond, float w_uncond) {
  return sub_rn(mul_rn(w_cond, cond), mul_rn(w_uncond, uncond));
}

// exp(x) for x <= 0 (x = -inf gives 0) in plain float32 arithmetic, identical on host and device:
// Cody-Waite reduction x = n ln2 + r and Cephes' degree-5 polynomial (about 1 ulp). exp(0) == 1.
// Results below e^-87 are flushed to 0 (so 2^n stays a normal float); those inputs (and -inf) run
// through the same arithmetic into a value that the final mask drops. Branch-free, so that the host
// loop vectorizes.
VAR_FAST_HOST_DEVICE float exp_nonpositive(float x) {
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer n, kept in the low bits
  const float shifted = add_rn(mul_rn(x, 1.44269504088896341f), kRound);
  const float n = sub_rn(shifted, kRound);
  float r = sub_rn(x, mul_rn(n, 0.693359375f));
  r = sub_rn(r, mul_rn(n, -2.12194440e-4f));
  float p = 1.9875691500e-4f;
  p = add_rn(mul_rn(p, r), 1.3981999507e-3f);
  p = add_rn(mul_rn(p, r), 8.3334519073e-3f);
  p = add_rn(mul_rn(p, r), 4.1665795894e-2f);
  p = add_rn(mul_rn(p, r), 1.6666665459e-1f);
  p = add_rn(mul_rn(p, r), 5.0000001201e-1f);
  p = add_rn(add_rn(mul_rn(p, mul_rn(r, r)), r), 1.0f);
  // 2^n from the bits of `shifted` (= 0x4B400000 + n for |n| < 2^22), without a float -> int conversion
  const float scale = bits_float((float_bits(shifted) - 0x4B400000u + 127u) << 23);
  const float e = mul_rn(p, scale);
  return bits_float(float_bits(e) & (0u - static_cast<uint32_t>(x >= -87.0f)));
}

// ---- host: argument checks shared by the CPU and CUDA launchers ----
struct SamplingPlan {
  int64_t B, L, V;  // B = rows of the (conditional) batch; the output is (B, L)
  int64_t top_k;    // 0: off, else 0 < top_k < V
  double top_p;     // 0: off, else 0 < top_p < 1
  float w_cond, w_uncond;
  uint64_t seed, row_offset;
};

// Checks the arguments (naming each) and normalises the filters. Negative top_k, like 0 and >= V,
// disables top-k. top_p outside [0, 1] is an error; 0 and 1 disable top-p.
inline SamplingPlan plan_sampling(const char* op, const at::Tensor& logits, bool cfg, double guidance,
                                  int64_t top_k, double top_p, int64_t seed, int64_t row_offset) {
  VF_CHECK_FLOATING(logits);
  TORCH_CHECK(logits.dim() == 3, op, ": logits must be 3-D ", cfg ? "(2B, L, V)" : "(B, L, V)", ", got shape ",
              logits.sizes());
  TORCH_CHECK(logits.size(2) >= 1, op, ": logits must have a vocabulary of V >= 1 (last dim), got shape ",
              logits.sizes());
  if (cfg) {
    TORCH_CHECK(logits.size(0) % 2 == 0, op, ": logits must hold a CFG-doubled batch (2B, L, V) "
                "(conditional rows then unconditional rows), got an odd first dim: shape ", logits.sizes());
    TORCH_CHECK(std::isfinite(guidance), op, ": guidance must be finite, got ", guidance);
  }
  TORCH_CHECK(top_p >= 0.0 && top_p <= 1.0, op, ": top_p must be in [0, 1] (0 or 1: no top-p), got ", top_p);
  TORCH_CHECK(row_offset >= 0, op, ": row_offset must be >= 0, got ", row_offset);
  SamplingPlan plan;
  plan.B = cfg ? logits.size(0) / 2 : logits.size(0);
  plan.L = logits.size(1);
  plan.V = logits.size(2);
  plan.top_k = (top_k > 0 && top_k < plan.V) ? top_k : 0;
  plan.top_p = (top_p > 0.0 && top_p < 1.0) ? top_p : 0.0;
  plan.w_cond = static_cast<float>(1.0 + guidance);
  plan.w_uncond = static_cast<float>(guidance);
  plan.seed = static_cast<uint64_t>(seed);
  plan.row_offset = static_cast<uint64_t>(row_offset);
  return plan;
}

// The error of rows flagged bad (flags: or of kFlag*).
inline void check_row_flags(bool cfg, int flags) {
  if (flags != 0) status::raise_for_flags(flags | (cfg ? status::kSampleCfg : 0), 0);
}

// The two ops' entry points (schemas in csrc/ops.cpp) over one device's sampler
// Sample(op, logits, cfg, guidance, top_k, top_p, seed, row_offset, status).
using SampleFn = at::Tensor (*)(const char*, const at::Tensor&, bool, double, int64_t, double, int64_t, int64_t,
                                const std::optional<at::Tensor>&);

template <SampleFn Sample>
at::Tensor sample_top_k_top_p_op(const at::Tensor& logits, int64_t top_k, double top_p, int64_t seed,
                                 int64_t row_offset, const std::optional<at::Tensor>& status) {
  return Sample("sample_top_k_top_p", logits, false, 0.0, top_k, top_p, seed, row_offset, status);
}

template <SampleFn Sample>
at::Tensor sample_cfg_top_k_top_p_op(const at::Tensor& logits, double guidance, int64_t top_k, double top_p,
                                     int64_t seed, int64_t row_offset, const std::optional<at::Tensor>& status) {
  return Sample("sample_cfg_top_k_top_p", logits, true, guidance, top_k, top_p, seed, row_offset, status);
}

}  // namespace sampling
}  // namespace var_fast

#if defined(__CUDACC__)
#include <cuda_runtime.h>

namespace var_fast {
namespace sampling {

constexpr unsigned kFullMask = 0xffffffffu;

// Canonical pairwise sum (see the top of the file); lane 0 of each warp holds its group's sum.
__device__ __forceinline__ float warp_tree_sum(float v) {
#pragma unroll
  for (int s = kWarpSize / 2; s >= 1; s /= 2) v = add_rn(v, __shfl_down_sync(kFullMask, v, s));
  return v;
}

__device__ __forceinline__ float warps_tree_sum(float v) {  // lanes 0..kWarps-1 of one warp
#pragma unroll
  for (int s = kWarps / 2; s >= 1; s /= 2) v = add_rn(v, __shfl_down_sync(kFullMask, v, s));
  return v;
}

// Block-wide reduction of (canonical float sum, integer sum, min, max), broadcast to every thread.
struct Reduced {
  float mass;
  uint32_t count, up, down;
};

__device__ __forceinline__ Reduced block_reduce(BlockScratch& s, float mass, uint32_t count, uint32_t up,
                                                uint32_t down) {
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  mass = warp_tree_sum(mass);
#pragma unroll
  for (int o = kWarpSize / 2; o >= 1; o /= 2) {
    count += __shfl_down_sync(kFullMask, count, o);
    up = min(up, __shfl_down_sync(kFullMask, up, o));
    down = max(down, __shfl_down_sync(kFullMask, down, o));
  }
  if (lane == 0) {
    s.mass[warp] = mass;
    s.count[warp] = count;
    s.up[warp] = up;
    s.down[warp] = down;
  }
  __syncthreads();
  if (warp == 0) {
    const bool has = lane < kWarps;
    mass = warps_tree_sum(has ? s.mass[lane] : 0.0f);
    count = has ? s.count[lane] : 0u;
    up = has ? s.up[lane] : 0xffffffffu;
    down = has ? s.down[lane] : 0u;
#pragma unroll
    for (int o = kWarps / 2; o >= 1; o /= 2) {
      count += __shfl_down_sync(kFullMask, count, o);
      up = min(up, __shfl_down_sync(kFullMask, up, o));
      down = max(down, __shfl_down_sync(kFullMask, down, o));
    }
    if (lane == 0) {
      s.mass_all = mass;
      s.count_all = count;
      s.up_all = up;
      s.down_all = down;
    }
  }
  __syncthreads();
  return Reduced{s.mass_all, s.count_all, s.up_all, s.down_all};
}

// Canonical inclusive scan of one value per thread: Kogge-Stone inside each warp, then the warp
// totals added in warp order: prefix(warp w) = ((0 + tot_0) + tot_1) + ... + tot_{w-1}.
__device__ __forceinline__ float block_tile_scan(BlockScratch& s, float v) {
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
#pragma unroll
  for (int d = 1; d < kWarpSize; d *= 2) {
    const float y = __shfl_up_sync(kFullMask, v, d);
    if (lane >= d) v = add_rn(v, y);
  }
  if (lane == kWarpSize - 1) s.mass[warp] = v;
  __syncthreads();
  float prefix = 0.0f;
  for (int w = 0; w < warp; ++w) prefix = add_rn(prefix, s.mass[w]);
  __syncthreads();  // s.mass is reused by the next reduction
  return add_rn(prefix, v);
}

// The largest data key t with probe(t) >= target, searched between lo (a data key with
// probe(lo) >= target) and hi (probe(hi) < target) by bisection of the key range; each probe also
// snaps lo up / hi down onto data keys, so it ends after a few passes. Mass probes use the canonical
// row sum, so the result is bitwise the CPU's. `lo_mass` returns probe(result) for mass searches.
template <bool kMass, typename KeyAt, typename WeightAt>
__device__ __forceinline__ uint32_t block_threshold_search(BlockScratch& s, int64_t V, uint32_t lo, uint32_t hi,
                                                           uint32_t count_target, float mass_target,
                                                           float& lo_mass, const KeyAt& key_at,
                                                           const WeightAt& weight_at) {
  while (hi - lo > 1) {
    const uint32_t mid = lo + (hi - lo) / 2;
    float mass = 0.0f;
    uint32_t count = 0, up = 0xffffffffu, down = 0;
    for (int64_t i = threadIdx.x; i < V; i += kLanes) {
      const uint32_t k = key_at(i);
      const bool in = k >= mid;
      if constexpr (kMass) {
        mass = add_rn(mass, in ? weight_at(i) : 0.0f);
      } else {
        count += in ? 1u : 0u;
      }
      up = min(up, in ? k : 0xffffffffu);
      down = max(down, in ? 0u : k);
    }
    const Reduced r = block_reduce(s, mass, count, up, down);
    const bool reaches = kMass ? (r.mass >= mass_target) : (r.count >= count_target);
    if (reaches) {
      lo = r.up;  // no data key in [mid, up): probe(up) == probe(mid)
      if (kMass) lo_mass = r.mass;
    } else {
      hi = r.down + 1;  // no data key in (down, mid)
    }
  }
  return lo;
}

template <typename scalar_t, bool kCfg>
__global__ void __launch_bounds__(kLanes) sample_rows_kernel(const SampleParams p) {
  extern __shared__ uint32_t row_cache[];  // keys[V], then weights[V] (float bits), when p.cached
  __shared__ BlockScratch scratch;
  uint32_t* const keys = row_cache;
  float* const weights = reinterpret_cast<float*>(row_cache + (p.cached ? p.V : 0));

  const int tid = threadIdx.x;
  const int64_t row = blockIdx.x;  // = b * L + l
  const int64_t b = row / p.L, l = row % p.L;
  const scalar_t* cond = static_cast<const scalar_t*>(p.logits) + b * p.stride_b + l * p.stride_l;
  const int64_t V = p.V;
  auto value = [&](int64_t i) -> float {
    const float c = static_cast<float>(cond[i * p.stride_v]);
    if constexpr (kCfg) {
      return cfg_mix(c, static_cast<float>(cond[p.uncond_offset + i * p.stride_v]), p.w_cond, p.w_uncond);
    } else {
      return c;
    }
  };

  // Pass 1: values, max, smallest key, bad values. Every thread only ever touches its own indices
  // i = tid + j * kLanes of the cache, so the cache needs no barriers.
  float vmax = -INFINITY;
  uint32_t kmin = 0xffffffffu, flags = 0;
  for (int64_t i = tid; i < V; i += kLanes) {
    const float x = value(i);
    flags |= (x != x) ? kFlagNaN : (x == INFINITY ? kFlagPosInf : 0);
    vmax = fmaxf(vmax, x);
    const uint32_t k = order_key(x);
    kmin = min(kmin, k);
    if (p.cached) {
      keys[i] = k;
      weights[i] = x;
    }
  }
  uint32_t kmax = order_key(vmax);
  {
    const Reduced r = block_reduce(scratch, 0.0f, 0u, kmin, kmax);  // up = min key, down = max key
    kmin = r.up;
    kmax = r.down;
  }
  // __syncthreads_or says whether any thread's value is non-zero, so one call per flag
  flags = (__syncthreads_or(flags & kFlagNaN) ? kFlagNaN : 0) |
          (__syncthreads_or(flags & kFlagPosInf) ? kFlagPosInf : 0);
  // order_key is monotone, so the max key is the max value's key; recover the value from it.
  const float m = bits_float((kmax & 0x80000000u) ? (kmax & 0x7fffffffu) : ~kmax);
  if (flags != 0 || m == -INFINITY) {
    if (tid == 0) {
      p.out[row] = -1;
      atomicOr(p.status, static_cast<int>(flags) | (flags == 0 ? kFlagAllNegInf : 0) | (kCfg ? status::kSampleCfg : 0));
    }
    return;
  }
  if (p.cached) {
    for (int64_t i = tid; i < V; i += kLanes) weights[i] = exp_nonpositive(sub_rn(weights[i], m));
  }
  auto key_at = [&](int64_t i) -> uint32_t { return p.cached ? keys[i] : order_key(value(i)); };
  auto weight_at = [&](int64_t i) -> float {
    return p.cached ? weights[i] : exp_nonpositive(sub_rn(value(i), m));
  };

  // top-k threshold (a count search), then the mass of the tokens it keeps.
  uint32_t keep_key = kmin;
  float unused_mass = 0.0f;
  if (p.top_k > 0) {
    keep_key = block_threshold_search<false>(scratch, V, kmin, kmax + 1, static_cast<uint32_t>(p.top_k), 0.0f,
                                             unused_mass, key_at, weight_at);
  }
  float kept_mass;
  {
    float mass = 0.0f;
    for (int64_t i = tid; i < V; i += kLanes) mass = add_rn(mass, key_at(i) >= keep_key ? weight_at(i) : 0.0f);
    kept_mass = block_reduce(scratch, mass, 0u, 0xffffffffu, 0u).mass;
  }
  // top-p threshold (a mass search above the top-k threshold).
  if (p.top_p > 0.0) {
    const float target = static_cast<float>(p.top_p * static_cast<double>(kept_mass));
    keep_key = block_threshold_search<true>(scratch, V, keep_key, kmax + 1, 0u, target, kept_mass, key_at,
                                            weight_at);
  }

  // Inverse-CDF draw over the kept tokens in index order, tile by tile.
  const float u = philox_row_uniform(p.seed, p.row_offset + static_cast<uint64_t>(row));
  const float thr = mul_rn(u, kept_mass);
  float carry = 0.0f;
  int64_t token = -1, last_positive = -1;
  for (int64_t base = 0; base < V; base += kLanes) {
    const int64_t i = base + tid;
    const float w = (i < V && key_at(i) >= keep_key) ? weight_at(i) : 0.0f;
    if (w > 0.0f) last_positive = i;
    const float tile = block_reduce(scratch, w, 0u, 0xffffffffu, 0u).mass;
    const float next = add_rn(carry, tile);
    if (next > thr) {  // the same decision in every thread
      const float prefix = block_tile_scan(scratch, w);
      const bool hit = w > 0.0f && add_rn(carry, prefix) > thr;
      const Reduced first = block_reduce(scratch, 0.0f, 0u, hit ? static_cast<uint32_t>(tid) : 0xffffffffu,
                                         w > 0.0f ? static_cast<uint32_t>(tid) + 1u : 0u);
      // no hit (rounding): the tile's last kept token with weight > 0 (down holds its tid + 1)
      token = base + (first.up != 0xffffffffu ? static_cast<int64_t>(first.up) : static_cast<int64_t>(first.down) - 1);
      break;
    }
    carry = next;
  }
  if (token < 0) {  // u * mass beyond the running sum (rounding): the last kept token
    const uint32_t pos = last_positive < 0 ? 0u : static_cast<uint32_t>(last_positive) + 1u;
    token = static_cast<int64_t>(block_reduce(scratch, 0.0f, 0u, 0xffffffffu, pos).down) - 1;
  }
  if (tid == 0) p.out[row] = token;
}

}  // namespace sampling
}  // namespace var_fast
#endif  // __CUDACC__

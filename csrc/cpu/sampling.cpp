// sample_top_k_top_p / sample_cfg_top_k_top_p on CPU: rows spread over at::parallel_for, a few O(V)
// passes per row and no sort. The float32 arithmetic and its order are the CUDA kernel's (see
// var_fast/sampling.cuh for the semantics), so both devices keep and draw the same tokens.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "var_fast/check.h"
#include "var_fast/sampling.cuh"

namespace var_fast {
namespace {
using namespace sampling;

constexpr uint32_t kNoKey = std::numeric_limits<uint32_t>::max();

// The canonical sum of kLanes lane values (clobbers `lanes`): the tree of the CUDA block reduction
// (pairwise inside each warp, strides 16..1, then over the warp sums, strides 4, 2, 1).
float lane_tree_sum(float* lanes) {
  for (int s = kWarpSize / 2; s >= 1; s /= 2)
    for (int w = 0; w < kWarps; ++w)
      for (int t = 0; t < s; ++t) {
        float* g = lanes + w * kWarpSize;
        g[t] = add_rn(g[t], g[t + s]);
      }
  float warp_sums[kWarps];
  for (int w = 0; w < kWarps; ++w) warp_sums[w] = lanes[w * kWarpSize];
  for (int s = kWarps / 2; s >= 1; s /= 2)
    for (int t = 0; t < s; ++t) warp_sums[t] = add_rn(warp_sums[t], warp_sums[t + s]);
  return warp_sums[0];
}

// The canonical inclusive scan of one tile (the CUDA block_tile_scan): Kogge-Stone inside each warp,
// then the warp totals folded left to right in front of each warp.
void lane_tile_scan(const float* tile, float* out) {
  float prefix = 0.0f;
  for (int w = 0; w < kWarps; ++w) {
    float v[kWarpSize];
    std::copy(tile + w * kWarpSize, tile + (w + 1) * kWarpSize, v);
    for (int d = 1; d < kWarpSize; d *= 2)
      for (int t = kWarpSize - 1; t >= d; --t) v[t] = add_rn(v[t], v[t - d]);  // v[t - d] still old
    for (int t = 0; t < kWarpSize; ++t) out[w * kWarpSize + t] = add_rn(prefix, v[t]);
    prefix = add_rn(prefix, v[kWarpSize - 1]);
  }
}

struct Probe {
  float mass;      // canonical sum of the weights with key >= mid (mass probes)
  int64_t count;   // number of keys >= mid (count probes)
  uint32_t up;     // smallest key >= mid
  uint32_t down;   // largest key < mid
};

template <bool kMass>
Probe probe_row(const uint32_t* keys, const float* weights, int64_t V, uint32_t mid) {
  float lanes[kLanes] = {};
  int64_t count = 0;
  uint32_t up = kNoKey, down = 0;
  for (int64_t base = 0; base < V; base += kLanes) {
    const int n = static_cast<int>(std::min<int64_t>(kLanes, V - base));
    const uint32_t* k = keys + base;
    const float* w = weights + base;
    for (int t = 0; t < n; ++t) {
      const bool in = k[t] >= mid;
      if constexpr (kMass) {
        lanes[t] = add_rn(lanes[t], in ? w[t] : 0.0f);
      } else {
        count += in ? 1 : 0;
      }
      up = std::min(up, in ? k[t] : kNoKey);
      down = std::max(down, in ? 0u : k[t]);
    }
  }
  return Probe{kMass ? lane_tree_sum(lanes) : 0.0f, count, up, down};
}

// The largest data key t with probe(t) >= target, lo a data key with probe(lo) >= target and
// probe(hi) < target (the CUDA block_threshold_search, step for step).
template <bool kMass>
uint32_t threshold_search(const uint32_t* keys, const float* weights, int64_t V, uint32_t lo, uint32_t hi,
                          int64_t count_target, float mass_target, float& lo_mass) {
  while (hi - lo > 1) {
    const uint32_t mid = lo + (hi - lo) / 2;
    const Probe r = probe_row<kMass>(keys, weights, V, mid);
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

// One row -> its token, or -1 with `flags` set for a bad row. keys/weights: scratch of V entries.
template <typename scalar_t, bool kCfg>
int64_t sample_row(const scalar_t* cond, int64_t uncond_offset, int64_t stride_v, const SamplingPlan& plan,
                   uint64_t row, uint32_t* keys, float* weights, int& flags) {
  const int64_t V = plan.V;
  uint32_t kmin = kNoKey, kmax = 0;
  int row_flags = 0;
  auto load = [&](auto sv) {
    for (int64_t i = 0; i < V; ++i) {
      float x = static_cast<float>(cond[i * sv]);
      if constexpr (kCfg) {
        x = cfg_mix(x, static_cast<float>(cond[uncond_offset + i * sv]), plan.w_cond, plan.w_uncond);
      }
      row_flags |= (x != x) ? kFlagNaN : (x == std::numeric_limits<float>::infinity() ? kFlagPosInf : 0);
      const uint32_t k = order_key(x);
      kmin = std::min(kmin, k);
      kmax = std::max(kmax, k);
      keys[i] = k;
      weights[i] = x;
    }
  };
  if (stride_v == 1) {
    load(std::integral_constant<int64_t, 1>{});
  } else {
    load(stride_v);
  }
  const float m = bits_float((kmax & 0x80000000u) ? (kmax & 0x7fffffffu) : ~kmax);
  if (row_flags != 0 || m == -std::numeric_limits<float>::infinity()) {
    flags |= row_flags != 0 ? row_flags : kFlagAllNegInf;
    return -1;
  }
  for (int64_t i = 0; i < V; ++i) weights[i] = exp_nonpositive(sub_rn(weights[i], m));

  uint32_t keep_key = kmin;
  float kept_mass = 0.0f;
  if (plan.top_k > 0) {
    keep_key = threshold_search<false>(keys, weights, V, kmin, kmax + 1, plan.top_k, 0.0f, kept_mass);
  }
  kept_mass = probe_row<true>(keys, weights, V, keep_key).mass;
  if (plan.top_p > 0.0) {
    const float target = static_cast<float>(plan.top_p * static_cast<double>(kept_mass));
    keep_key = threshold_search<true>(keys, weights, V, keep_key, kmax + 1, 0, target, kept_mass);
  }

  // Inverse-CDF draw over the kept tokens in index order, tile by tile as the CUDA block does.
  const float u = philox_row_uniform(plan.seed, plan.row_offset + row);
  const float thr = mul_rn(u, kept_mass);
  float carry = 0.0f;
  int64_t last_positive = -1;
  float tile[kLanes], lanes[kLanes], scan[kLanes];
  for (int64_t base = 0; base < V; base += kLanes) {
    const int n = static_cast<int>(std::min<int64_t>(kLanes, V - base));
    for (int t = 0; t < kLanes; ++t) {
      tile[t] = (t < n && keys[base + t] >= keep_key) ? weights[base + t] : 0.0f;
      if (tile[t] > 0.0f) last_positive = base + t;
    }
    std::copy(tile, tile + kLanes, lanes);
    const float next = add_rn(carry, lane_tree_sum(lanes));
    if (next > thr) {
      lane_tile_scan(tile, scan);
      int last_in_tile = -1;
      for (int t = 0; t < kLanes; ++t) {
        if (tile[t] > 0.0f) {
          if (add_rn(carry, scan[t]) > thr) return base + t;
          last_in_tile = t;
        }
      }
      return base + last_in_tile;  // rounding: the tile's last kept token (the tile's sum is > 0)
    }
    carry = next;
  }
  return last_positive;  // rounding: u * mass beyond the running sum
}

at::Tensor sample_cpu(const char* op, const at::Tensor& logits, bool cfg, double guidance, int64_t top_k,
                      double top_p, int64_t seed, int64_t row_offset) {
  VF_CHECK_DEVICE(logits, at::Device(at::kCPU));
  const SamplingPlan plan = plan_sampling(op, logits, cfg, guidance, top_k, top_p, seed, row_offset);
  auto out = at::empty({plan.B, plan.L}, logits.options().dtype(at::kLong));
  const int64_t rows = plan.B * plan.L;
  if (rows == 0) return out;
  const int64_t L = plan.L, V = plan.V;
  const int64_t stride_b = logits.stride(0), stride_l = logits.stride(1), stride_v = logits.stride(2);
  const int64_t uncond_offset = plan.B * stride_b;
  int64_t* tokens = out.mutable_data_ptr<int64_t>();
  std::atomic<int> bad_flags{0};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "sample_top_k_top_p_cpu", [&] {
    const scalar_t* base = logits.const_data_ptr<scalar_t>();
    const int64_t grain = std::max<int64_t>(1, 16384 / V);
    at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
      std::vector<uint32_t> keys(V);
      std::vector<float> weights(V);
      int flags = 0;
      for (int64_t r = begin; r < end; ++r) {
        const scalar_t* cond = base + (r / L) * stride_b + (r % L) * stride_l;
        tokens[r] = cfg ? sample_row<scalar_t, true>(cond, uncond_offset, stride_v, plan, r, keys.data(),
                                                     weights.data(), flags)
                        : sample_row<scalar_t, false>(cond, 0, stride_v, plan, r, keys.data(), weights.data(),
                                                      flags);
      }
      if (flags != 0) bad_flags.fetch_or(flags);
    });
  });
  check_row_flags(op, cfg, bad_flags.load());
  return out;
}

at::Tensor sample_top_k_top_p_cpu(const at::Tensor& logits, int64_t top_k, double top_p, int64_t seed,
                                  int64_t row_offset) {
  return sample_cpu("sample_top_k_top_p", logits, false, 0.0, top_k, top_p, seed, row_offset);
}

at::Tensor sample_cfg_top_k_top_p_cpu(const at::Tensor& logits, double guidance, int64_t top_k, double top_p,
                                      int64_t seed, int64_t row_offset) {
  return sample_cpu("sample_cfg_top_k_top_p", logits, true, guidance, top_k, top_p, seed, row_offset);
}

}  // namespace
}  // namespace var_fast

TORCH_LIBRARY_IMPL(var_fast, CPU, m) {
  m.impl("sample_top_k_top_p", &var_fast::sample_top_k_top_p_cpu);
  m.impl("sample_cfg_top_k_top_p", &var_fast::sample_cfg_top_k_top_p_cpu);
}

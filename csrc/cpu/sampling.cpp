// sample_top_k_top_p / sample_cfg_top_k_top_p on CPU: rows spread over at::parallel_for, a few O(V)
// passes per row and no sort. The float32 arithmetic and its order are the CUDA kernel's (see
// csrc/include/var_fast/sampling.cuh for the semantics), so both devices keep and draw the same tokens.
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
// (pairwise inside each warp, strides 16..1, then over the warp sums, strides 4, 2, 1). Lanes from
// `active` on are zero (`active` rounded up to whole warps must be zero-filled): adding zeros is
// exact, so whole-zero warps are skipped without changing the result.
float lane_tree_sum(float* lanes, int active) {
  float warp_sums[kWarps] = {};
  const int warps = (active + kWarpSize - 1) / kWarpSize;
  for (int w = 0; w < warps; ++w) {
    float* g = lanes + w * kWarpSize;
    for (int s = kWarpSize / 2; s >= 1; s /= 2)
      for (int t = 0; t < s; ++t) g[t] = add_rn(g[t], g[t + s]);
    warp_sums[w] = g[0];
  }
  for (int s = kWarps / 2; s >= 1; s /= 2)
    for (int t = 0; t < s; ++t) warp_sums[t] = add_rn(warp_sums[t], warp_sums[t + s]);
  return warp_sums[0];
}

// The canonical inclusive scan of one tile (the CUDA block_tile_scan): Kogge-Stone inside each warp,
// then the warp totals folded left to right in front of each warp. Only the first `active` outputs
// are written (enough for indices < active).
void lane_tile_scan(const float* tile, int active, float* out) {
  float prefix = 0.0f;
  const int warps = (active + kWarpSize - 1) / kWarpSize;
  for (int w = 0; w < warps; ++w) {
    float v[kWarpSize];
    std::copy(tile + w * kWarpSize, tile + (w + 1) * kWarpSize, v);
    for (int d = 1; d < kWarpSize; d *= 2)
      for (int t = kWarpSize - 1; t >= d; --t) v[t] = add_rn(v[t], v[t - d]);  // v[t - d] still old
    for (int t = 0; t < kWarpSize; ++t) out[w * kWarpSize + t] = add_rn(prefix, v[t]);
    prefix = add_rn(prefix, v[kWarpSize - 1]);
  }
}

int active_lanes(int64_t V) { return static_cast<int>(std::min<int64_t>(V, kLanes)); }
int padded_lanes(int active) { return (active + kWarpSize - 1) / kWarpSize * kWarpSize; }

// The canonical mass of the weights whose key is >= mid: lane t sums i = t, t + kLanes, ... in order.
float canonical_mass(const uint32_t* keys, const float* weights, int64_t V, uint32_t mid) {
  float lanes[kLanes];
  const int active = active_lanes(V);
  std::fill(lanes, lanes + padded_lanes(active), 0.0f);
  for (int64_t base = 0; base < V; base += kLanes) {
    const int n = static_cast<int>(std::min<int64_t>(kLanes, V - base));
    const uint32_t* k = keys + base;
    const float* w = weights + base;
    for (int t = 0; t < n; ++t) {  // branch-free, so that it vectorizes
      const uint32_t in = 0u - static_cast<uint32_t>(k[t] >= mid);
      lanes[t] = add_rn(lanes[t], bits_float(float_bits(w[t]) & in));
    }
  }
  return lane_tree_sum(lanes, active);
}

// An estimate of the q-quantile (0 <= q <= 1) of keys[0..n) from 15 evenly spaced samples.
uint32_t sample_quantile(const uint32_t* keys, int64_t n, double q) {
  constexpr int kSamples = 15;
  uint32_t sample[kSamples];
  for (int j = 0; j < kSamples; ++j) sample[j] = keys[(2 * j + 1) * n / (2 * kSamples)];
  std::sort(sample, sample + kSamples);
  const int at = static_cast<int>(std::clamp(q * kSamples, 0.0, kSamples - 1.0));
  return sample[at];
}

// The largest data key t with probe(t) >= target (probe = count, or canonical mass, of keys >= t),
// for lo a data key with probe(lo) >= target and probe(hi) < target: the CUDA block_threshold_search.
// The result is unique (probe is monotone, also in float), so any search order gives the same key;
// the CPU searches on candidate lists that shrink at every step (O(V) in all), with exact counts or
// with re-associated mass sums that are then checked against the canonical mass.
template <bool kMass>
uint32_t compacted_search(uint32_t* ck, float* cw, int64_t n, uint32_t lo, uint32_t hi, int64_t count_target,
                          float mass_target) {
  // invariants: ck[0..n) = the data keys in [lo, hi) (lo and hi - 1 among them); count_above /
  // mass_above = probe(hi)
  int64_t count_above = 0;
  float mass_above = 0.0f;
  while (hi - lo > 1) {
    // Pivot: a quantile of a sample of the candidates (quickselect-like, so the list shrinks
    // geometrically); for counts, the quantile where the k-th largest should be.
    const double from_top =
        kMass ? 0.5 : static_cast<double>(count_target - count_above) / static_cast<double>(n);
    const uint32_t mid = std::clamp(sample_quantile(ck, n, 1.0 - from_top), lo + 1, hi - 1);
    constexpr int kPartials = 16;  // independent partial sums, so that the loop vectorizes
    uint32_t count = 0, up = kNoKey, down = 0;
    float partial[kPartials] = {};
    auto visit = [&](int64_t i, int slot) {  // branch-free
      const uint32_t key = ck[i];
      const uint32_t in = 0u - static_cast<uint32_t>(key >= mid);
      if constexpr (kMass) {
        partial[slot] += bits_float(float_bits(cw[i]) & in);
      } else {
        count += in & 1u;
      }
      up = std::min(up, key | ~in);
      down = std::max(down, key & ~in);
    };
    int64_t i = 0;
    for (; i + kPartials <= n; i += kPartials)
      for (int j = 0; j < kPartials; ++j) visit(i + j, j);
    for (; i < n; ++i) visit(i, 0);
    float mass = 0.0f;
    for (float v : partial) mass += v;
    const bool reaches = kMass ? (mass_above + mass >= mass_target) : (count_above + count >= count_target);
    if (reaches) {  // the answer is >= mid: only the candidates >= mid stay
      lo = up;
    } else {  // the answer is < mid: the candidates >= mid count from now on
      hi = down + 1;
      count_above += count;
      mass_above = mass_above + mass;
    }
    int64_t kept = 0;
    for (int64_t c = 0; c < n; ++c) {  // ck[c] is read before any later write reaches it
      const uint32_t key = ck[c];
      ck[kept] = key;
      if constexpr (kMass) cw[kept] = cw[c];
      kept += ((key >= mid) == reaches) ? 1 : 0;
    }
    n = kept;
  }
  return lo;
}

// Canonical-mass bisection (the CUDA kernel's search, probe for probe), used when the re-associated
// search's answer fails the canonical check (a near-tie with the target, within rounding).
uint32_t canonical_search(const uint32_t* keys, const float* weights, int64_t V, uint32_t lo, uint32_t hi,
                          float mass_target, float& lo_mass) {
  while (hi - lo > 1) {
    const uint32_t mid = lo + (hi - lo) / 2;
    uint32_t up = kNoKey, down = 0;
    for (int64_t i = 0; i < V; ++i) {
      const uint32_t in = 0u - static_cast<uint32_t>(keys[i] >= mid);
      up = std::min(up, keys[i] | ~in);
      down = std::max(down, keys[i] & ~in);
    }
    const float mass = canonical_mass(keys, weights, V, mid);
    if (mass >= mass_target) {
      lo = up;
      lo_mass = mass;
    } else {
      hi = down + 1;
    }
  }
  return lo;
}

struct RowScratch {
  explicit RowScratch(int64_t V) : keys(V), weights(V), cand_keys(V), cand_weights(V) {}
  std::vector<uint32_t> keys;
  std::vector<float> weights;
  std::vector<uint32_t> cand_keys;
  std::vector<float> cand_weights;
};

// One row -> its token, or -1 with `flags` set for a bad row; `s` holds scratch of V entries.
template <typename scalar_t, bool kCfg>
int64_t sample_row(const scalar_t* cond, int64_t uncond_offset, int64_t stride_v, const SamplingPlan& plan,
                   uint64_t row, RowScratch& s, int& flags) {
  const int64_t V = plan.V;
  uint32_t* const keys = s.keys.data();
  float* const weights = s.weights.data();
  uint32_t kmin = kNoKey, kmax = 0;
  int row_flags = 0;
  auto load = [&](auto sv) {
    for (int64_t i = 0; i < V; ++i) {
      float x = static_cast<float>(cond[i * sv]);
      if constexpr (kCfg) {
        x = cfg_mix(x, static_cast<float>(cond[uncond_offset + i * sv]), plan.w_cond, plan.w_uncond);
      }
      row_flags |= static_cast<int>(x != x) * kFlagNaN +
                   static_cast<int>(x == std::numeric_limits<float>::infinity()) * kFlagPosInf;
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

  // top-k threshold: an exact count search over all keys
  uint32_t keep_key = kmin;
  if (plan.top_k > 0) {
    std::copy(keys, keys + V, s.cand_keys.data());
    keep_key = compacted_search<false>(s.cand_keys.data(), nullptr, V, kmin, kmax + 1, plan.top_k, 0.0f);
  }
  float kept_mass = canonical_mass(keys, weights, V, keep_key);
  // top-p threshold: a mass search over the tokens kept by top-k, checked canonically
  if (plan.top_p > 0.0) {
    const float target = static_cast<float>(plan.top_p * static_cast<double>(kept_mass));
    int64_t n = 0;
    for (int64_t i = 0; i < V; ++i) {
      s.cand_keys[n] = keys[i];
      s.cand_weights[n] = weights[i];
      n += keys[i] >= keep_key ? 1 : 0;
    }
    const uint32_t found =
        compacted_search<true>(s.cand_keys.data(), s.cand_weights.data(), n, keep_key, kmax + 1, 0, target);
    const float found_mass = canonical_mass(keys, weights, V, found);
    if (found_mass >= target && (found == kmax || canonical_mass(keys, weights, V, found + 1) < target)) {
      keep_key = found;
      kept_mass = found_mass;
    } else {
      keep_key = canonical_search(keys, weights, V, keep_key, kmax + 1, target, kept_mass);
    }
  }

  // Inverse-CDF draw over the kept tokens in index order, tile by tile as the CUDA block does.
  const float u = philox_row_uniform(plan.seed, plan.row_offset + row);
  const float thr = mul_rn(u, kept_mass);
  float carry = 0.0f;
  int64_t last_positive = -1;
  float tile[kLanes], lanes[kLanes], scan[kLanes];
  for (int64_t base = 0; base < V; base += kLanes) {
    const int n = static_cast<int>(std::min<int64_t>(kLanes, V - base));
    const int padded = padded_lanes(n);
    for (int t = 0; t < padded; ++t) {
      tile[t] = (t < n && keys[base + t] >= keep_key) ? weights[base + t] : 0.0f;
      if (tile[t] > 0.0f) last_positive = base + t;
    }
    std::copy(tile, tile + padded, lanes);
    const float next = add_rn(carry, lane_tree_sum(lanes, n));
    if (next > thr) {
      lane_tile_scan(tile, n, scan);
      int last_in_tile = -1;
      for (int t = 0; t < n; ++t) {
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
                      double top_p, int64_t seed, int64_t row_offset, const std::optional<at::Tensor>& status) {
  VF_CHECK_DEVICE(logits, at::Device(at::kCPU));
  const SamplingPlan plan = plan_sampling(op, logits, cfg, guidance, top_k, top_p, seed, row_offset);
  if (status.has_value()) status::check_status_tensor(op, *status, logits.device());
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
      RowScratch scratch(V);
      int flags = 0;
      for (int64_t r = begin; r < end; ++r) {
        const scalar_t* cond = base + (r / L) * stride_b + (r % L) * stride_l;
        tokens[r] = cfg ? sample_row<scalar_t, true>(cond, uncond_offset, stride_v, plan, r, scratch, flags)
                        : sample_row<scalar_t, false>(cond, 0, stride_v, plan, r, scratch, flags);
      }
      if (flags != 0) bad_flags.fetch_or(flags);
    });
  });
  if (status.has_value()) {
    if (bad_flags.load() != 0) {
      int* word = status->mutable_data_ptr<int>();
      *word |= bad_flags.load() | (cfg ? status::kSampleCfg : 0);
    }
  } else {
    check_row_flags(cfg, bad_flags.load());
  }
  return out;
}

}  // namespace
}  // namespace var_fast

TORCH_LIBRARY_IMPL(var_fast, CPU, m) {
  using namespace var_fast::sampling;
  m.impl("sample_top_k_top_p", &sample_top_k_top_p_op<&var_fast::sample_cpu>);
  m.impl("sample_cfg_top_k_top_p", &sample_cfg_top_k_top_p_op<&var_fast::sample_cpu>);
}

// nearest_code on CPU: z (N, C), codebook (V, C) -> int64 (N,) index of the nearest code.
//
// Exactness. The reference (var_fast/models/quantizer.py) computes
//     d = (sum(z^2, 1, keepdim) + sum(e^2, 1)).addmm_(z, e.T, alpha=-2, beta=1);  argmin(d, 1)
// in float32, so near-ties are decided by the rounding of that formula, including the BLAS's order of
// summation in the dot products, which no other code can know. We
//   1. take |z|^2 and |e|^2 from the very same ATen reductions and round b = |z|^2 + |e|^2 the same way;
//   2. compute d = b - 2 p with p the dot product accumulated in channel order (an FMA chain, as the
//      sgemm micro-kernels do for K this small: on MKL/AVX2 this reproduces the reference's distances bit
//      for bit), fused with a running arg-min (lowest index on ties), never writing the (N, V) matrix;
//   3. certify each row: whatever order the BLAS sums in, a float32 dot product of C terms is within
//      gamma_C * sum|z_k e_k| of the exact one (var_fast/quant_cpu.h), so when the runner-up is further
//      than the two codes' bounds our code is provably the reference's argmin. Rows that fail this cheap
//      test (a few in 10^4 on random data) are re-examined with exact (double) distances and exact
//      bounds per code;
//   4. rows still undecided (about 1 in 10^4 on random data; duplicated codes, exact ties, NaN/inf) are
//      taken from the reference formula itself, recomputed with the same ATen ops on the same shapes: its
//      rounding, its ties, its NaN rule.
// Result: token for token torch.argmin of the reference formula for any BLAS that sums the products and
// then applies alpha and beta (all that we know of). Step 4 costs one reference GEMM when it runs.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <vector>

#include "var_fast/check.h"
#include "var_fast/quant_cpu.h"
#include "var_fast/quant_cpu_simd.h"  // VF_CPU_MULTIVERSION, vf8/vi8, load8/store8

namespace var_fast::quant_cpu {
namespace {

constexpr int64_t kLanes = 16;        // codes per micro-tile (two 8-float vectors)
constexpr int64_t kTileRows = 4;      // rows per micro-tile: 4 x 2 vector accumulators
constexpr int64_t kChunkRows = 32;    // rows whose running arg-min state stays in L1
constexpr int64_t kChunkCodes = 256;  // codes whose transposed block stays in L1/L2 across a row chunk

// Per row and per lane (codes v = lane mod kLanes): best distance, its index, runner-up distance.
struct LaneState {
  alignas(32) float best[kLanes];
  alignas(32) float second[kLanes];
  alignas(32) int32_t index[kLanes];
};

struct Problem {
  const float* z;        // (N, C)
  const float* codes_t;  // (C, Vp): codebook transposed, zero-padded to Vp = multiple of kLanes
  const float* zz;       // (N,) |z|^2 as the reference computes it
  const float* ee;       // (Vp,) |e|^2 as the reference computes it, +inf on padding codes
  int64_t C, Vp;
};

// d for rows [row, row + R) against codes [v0, v0 + kLanes), folded into the lane states. The scan
// visits the codes of a lane in increasing order and replaces the best only on a strictly smaller
// distance, so ties keep the lowest index; a tie also lands in `second`, which makes the row uncertain.
template <int64_t R>
__attribute__((always_inline)) inline void micro_tile(const float* __restrict z, const float* __restrict codes_t,
                                                      const float* __restrict zz, const float* __restrict ee,
                                                      int64_t C, int64_t Vp, int64_t v0, LaneState* __restrict state) {
  vf8 acc[R][2];
  for (int64_t r = 0; r < R; ++r) acc[r][0] = acc[r][1] = vf8{};
  const float* e = codes_t + v0;
  for (int64_t k = 0; k < C; ++k, e += Vp) {
    const vf8 e0 = load8(e), e1 = load8(e + 8);
    for (int64_t r = 0; r < R; ++r) {
      const float zr = z[r * C + k];
      acc[r][0] += zr * e0;
      acc[r][1] += zr * e1;
    }
  }
  const vf8 ee_lanes[2] = {load8(ee + v0), load8(ee + v0 + 8)};
  const vi8 lane_index[2] = {vi8{0, 1, 2, 3, 4, 5, 6, 7} + static_cast<int32_t>(v0),
                             vi8{8, 9, 10, 11, 12, 13, 14, 15} + static_cast<int32_t>(v0)};
  for (int64_t r = 0; r < R; ++r) {
    LaneState& s = state[r];
    for (int64_t h = 0; h < 2; ++h) {
      const vf8 b = zz[r] + ee_lanes[h];  // rounded on its own, as the reference's broadcast add
      const vf8 d = b - 2.0f * acc[r][h];
      const vf8 best = load8(s.best + 8 * h), second = load8(s.second + 8 * h);
      const vi8 index = load8(s.index + 8 * h);
      const vi8 better = d < best;
      store8(s.second + 8 * h, better ? best : (d < second ? d : second));
      store8(s.index + 8 * h, better ? lane_index[h] : index);
      store8(s.best + 8 * h, better ? d : best);
    }
  }
}

// Rows [row_begin, row_end): tokens and "certain" flags.
VF_CPU_MULTIVERSION
void nearest_code_rows(const Problem& p, int64_t row_begin, int64_t row_end, float sqrt_ee_max, int64_t* tokens,
                       uint8_t* uncertain) {
  std::array<LaneState, kChunkRows> state;
  const int64_t C = p.C, Vp = p.Vp;
  for (int64_t r0 = row_begin; r0 < row_end; r0 += kChunkRows) {
    const int64_t rows = std::min(kChunkRows, row_end - r0);
    for (int64_t r = 0; r < rows; ++r) {
      std::fill_n(state[r].best, kLanes, std::numeric_limits<float>::infinity());
      std::fill_n(state[r].second, kLanes, std::numeric_limits<float>::infinity());
      std::fill_n(state[r].index, kLanes, 0);
    }
    for (int64_t c0 = 0; c0 < Vp; c0 += kChunkCodes) {
      const int64_t c1 = std::min(Vp, c0 + kChunkCodes);
      int64_t r = 0;
      for (; r + kTileRows <= rows; r += kTileRows) {
        const float* z = p.z + (r0 + r) * C;
        const float* zz = p.zz + r0 + r;
        for (int64_t v0 = c0; v0 < c1; v0 += kLanes) {
          micro_tile<kTileRows>(z, p.codes_t, zz, p.ee, C, Vp, v0, &state[r]);
        }
      }
      for (; r < rows; ++r) {
        const float* z = p.z + (r0 + r) * C;
        const float* zz = p.zz + r0 + r;
        for (int64_t v0 = c0; v0 < c1; v0 += kLanes) micro_tile<1>(z, p.codes_t, zz, p.ee, C, Vp, v0, &state[r]);
      }
    }
    // Merge the lanes: the smallest (distance, index) wins; the runner-up is the winner lane's second
    // or any other lane's best.
    for (int64_t r = 0; r < rows; ++r) {
      const LaneState& s = state[r];
      int64_t win = 0;
      for (int64_t j = 1; j < kLanes; ++j) {
        if (s.best[j] < s.best[win] || (s.best[j] == s.best[win] && s.index[j] < s.index[win])) win = j;
      }
      float second = s.second[win];
      for (int64_t j = 0; j < kLanes; ++j) {
        if (j != win && s.best[j] < second) second = s.best[j];
      }
      const int64_t n = r0 + r;
      tokens[n] = s.index[win];
      uncertain[n] = !var_fast::quant::nearest_code_certain(s.best[win], second, p.zz[n], sqrt_ee_max, p.C);
    }
  }
}

}  // namespace

namespace {

// Step 3 for one row: exact distances and bounds for every code; true (and the token) when one code's
// interval lies strictly below every other code's.
bool certify_row_exactly(const float* z, const float* codes, const float* norms, float zz, int64_t V, int64_t C,
                         int64_t* token) {
  double best_upper = std::numeric_limits<double>::infinity();
  int64_t best = -1;
  // The two smallest lower bounds, to find the smallest one of the codes other than `best`.
  double lower1 = std::numeric_limits<double>::infinity(), lower2 = lower1;
  int64_t lower1_index = -1;
  for (int64_t v = 0; v < V; ++v) {
    const float* e = codes + v * C;
    double dot = 0.0, abs_dot = 0.0;
    for (int64_t k = 0; k < C; ++k) {
      const double product = static_cast<double>(z[k]) * static_cast<double>(e[k]);  // exact
      dot += product;
      abs_dot += std::fabs(product);
    }
    const float b = zz + norms[v];  // the reference's rounding of |z|^2 + |e|^2
    const double d_exact = static_cast<double>(b) - 2.0 * dot;
    const double bound = var_fast::quant::nearest_code_exact_bound(d_exact, abs_dot, C);
    if (!var_fast::quant::is_finite_value(d_exact) || !var_fast::quant::is_finite_value(bound)) return false;
    const double upper = d_exact + bound, lower = d_exact - bound;
    if (upper < best_upper) {
      best_upper = upper;
      best = v;
    }
    if (lower < lower1) {
      lower2 = lower1;
      lower1 = lower;
      lower1_index = v;
    } else if (lower < lower2) {
      lower2 = lower;
    }
  }
  const double other_lower = lower1_index == best ? lower2 : lower1;
  if (best < 0 || !(other_lower > best_upper)) return false;
  *token = best;
  return true;
}

}  // namespace

PreparedCodebook prepare_codebook_f32(const at::Tensor& codebook) {
  PreparedCodebook book;
  const int64_t V = codebook.size(0), C = codebook.size(1);
  TORCH_CHECK(V <= std::numeric_limits<int32_t>::max(), "nearest_code: codebook has too many codes (", V, ")");
  book.codes = codebook;
  book.norms = codebook.square().sum(1);  // exactly as the reference computes |e|^2
  const int64_t Vp = (V + kLanes - 1) / kLanes * kLanes;
  book.codes_t = at::empty({C, Vp}, codebook.options());
  book.norms_padded = at::empty({Vp}, codebook.options());
  const float* cb = codebook.const_data_ptr<float>();
  float* ct = book.codes_t.data_ptr<float>();
  for (int64_t v0 = 0; v0 < Vp; v0 += kLanes) {  // transpose in blocks of kLanes codes
    for (int64_t k = 0; k < C; ++k) {
      for (int64_t j = 0; j < kLanes; ++j) ct[k * Vp + v0 + j] = v0 + j < V ? cb[(v0 + j) * C + k] : 0.0f;
    }
  }
  const float* norms = book.norms.const_data_ptr<float>();
  float* padded = book.norms_padded.data_ptr<float>();
  float norm_max = 0.0f;
  for (int64_t v = 0; v < V; ++v) {
    padded[v] = norms[v];
    // A NaN/inf norm makes sqrt_norm_max NaN/inf, so no row passes the first certification.
    norm_max = (norms[v] > norm_max || norms[v] != norms[v]) ? norms[v] : norm_max;
  }
  for (int64_t v = V; v < Vp; ++v) padded[v] = std::numeric_limits<float>::infinity();
  book.sqrt_norm_max = std::sqrt(norm_max);
  return book;
}

at::Tensor nearest_code_f32(const at::Tensor& z, const PreparedCodebook& book) {
  const int64_t N = z.size(0), C = z.size(1), V = book.codes.size(0);
  auto tokens = at::empty({N}, z.options().dtype(at::kLong));
  if (N == 0) return tokens;
  const at::Tensor zz = z.square().sum(1);  // exactly as the reference computes |z|^2
  const Problem problem{z.const_data_ptr<float>(), book.codes_t.const_data_ptr<float>(), zz.const_data_ptr<float>(),
                        book.norms_padded.const_data_ptr<float>(), C, book.codes_t.size(1)};
  auto uncertain = at::empty({N}, z.options().dtype(at::kBool));
  int64_t* tok = tokens.data_ptr<int64_t>();
  auto* unc = reinterpret_cast<uint8_t*>(uncertain.data_ptr<bool>());
  const int64_t grain = std::max<int64_t>(kTileRows, (int64_t{1} << 20) / std::max<int64_t>(1, problem.Vp * C));
  at::parallel_for(0, N, grain, [&](int64_t begin, int64_t end) {
    nearest_code_rows(problem, begin, end, book.sqrt_norm_max, tok, unc);
  });

  std::vector<int64_t> undecided;
  for (int64_t n = 0; n < N; ++n) {
    if (unc[n]) undecided.push_back(n);
  }
  if (undecided.empty()) return tokens;
  const float* zp = z.const_data_ptr<float>();
  const float* codes = book.codes.const_data_ptr<float>();
  const float* norms = book.norms.const_data_ptr<float>();
  const float* zzp = zz.const_data_ptr<float>();
  at::parallel_for(0, static_cast<int64_t>(undecided.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t n = undecided[i];
      if (certify_row_exactly(zp + n * C, codes, norms, zzp[n], V, C, tok + n)) unc[n] = 0;
    }
  });
  bool any_undecided = false;
  for (const int64_t n : undecided) any_undecided = any_undecided || unc[n] != 0;
  if (any_undecided) var_fast::quant::take_reference_argmin(z, zz, book.codes, book.norms, uncertain, tokens);
  return tokens;
}

namespace {

at::Tensor nearest_code_cpu(const at::Tensor& z, const at::Tensor& codebook) {
  var_fast::quant::check_nearest_code_args(z, codebook);
  // float32 math for every input dtype: the distances (and their near-ties) are those of the reference.
  return nearest_code_f32(z.to(at::kFloat).contiguous(), prepare_codebook_f32(codebook.to(at::kFloat).contiguous()));
}

}  // namespace
}  // namespace var_fast::quant_cpu

TORCH_LIBRARY_IMPL(var_fast, CPU, m) { m.impl("nearest_code", &var_fast::quant_cpu::nearest_code_cpu); }

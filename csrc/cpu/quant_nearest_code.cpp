// nearest_code on CPU: z (N, C), codebook (V, C) -> int64 (N,) index of the nearest code.
//
// Exactness. The reference (var_fast/models/quantizer.py) computes
//     d = (sum(z^2, 1, keepdim) + sum(e^2, 1)).addmm_(z, e.T, alpha=-2, beta=1);  argmin(d, 1)
// in float32, so near-ties are decided by the rounding of that formula, including the BLAS's order of
// summation in the dot products. We
//   1. take |z|^2 and |e|^2 from the very same ATen reductions and round b = |z|^2 + |e|^2 the same way;
//   2. compute d = b - 2 p with p the dot product accumulated in channel order (an FMA chain: what the
//      sgemm micro-kernels do for K this small; on MKL/AVX2 this reproduces the reference's distances
//      bit for bit), fused with a running arg-min (lowest index on ties), never writing the (N, V) matrix;
//   3. certify each row: whatever order the BLAS sums in, its distances differ from ours by at most a
//      known rounding bound (var_fast::quant::nearest_code_certain), so if the runner-up is further than
//      that, our code is provably the reference's;
//   4. if some row is not certain (duplicated codes, exact or near ties, NaN/inf), recompute the
//      reference formula itself with the same ATen ops on the same shapes and take those rows from it.
// Result: token for token torch.argmin of the reference formula, for any BLAS; the exact fallback costs
// one reference GEMM and only runs when a near-tie exists.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <array>
#include <limits>
#include <vector>

#include "var_fast/check.h"
#include "var_fast/quant_cpu.h"

// GCC/Clang on x86-64 Linux: compile the hot loops for AVX2+FMA too and pick at load time.
#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__))
#define VF_CPU_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define VF_CPU_MULTIVERSION
#endif

namespace var_fast::quant_cpu {
namespace {

constexpr int64_t kLanes = 16;       // codes per micro-tile (two AVX2 vectors)
constexpr int64_t kTileRows = 4;     // rows per micro-tile
constexpr int64_t kChunkRows = 32;   // rows whose running arg-min state stays in L1
constexpr int64_t kChunkCodes = 256; // codes whose transposed block stays in L1/L2 across a row chunk

// Per row and per lane (codes v = lane mod kLanes): best distance, its index, runner-up distance.
struct LaneState {
  std::array<float, kLanes> best;
  std::array<float, kLanes> second;
  std::array<int32_t, kLanes> index;
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
__attribute__((always_inline)) inline void micro_tile(const Problem& p, int64_t row, int64_t v0, LaneState* state) {
  float acc[R][kLanes] = {};
  for (int64_t k = 0; k < p.C; ++k) {
    const float* e = p.codes_t + k * p.Vp + v0;
    for (int64_t r = 0; r < R; ++r) {
      const float zr = p.z[(row + r) * p.C + k];
      for (int64_t j = 0; j < kLanes; ++j) acc[r][j] += zr * e[j];
    }
  }
  for (int64_t r = 0; r < R; ++r) {
    const float zz = p.zz[row + r];
    LaneState& s = state[r];
    for (int64_t j = 0; j < kLanes; ++j) {
      const float b = zz + p.ee[v0 + j];
      const float d = b - 2.0f * acc[r][j];
      const bool better = d < s.best[j];
      s.second[j] = better ? s.best[j] : (d < s.second[j] ? d : s.second[j]);
      s.index[j] = better ? static_cast<int32_t>(v0 + j) : s.index[j];
      s.best[j] = better ? d : s.best[j];
    }
  }
}

// Rows [row_begin, row_end): tokens and "certain" flags.
VF_CPU_MULTIVERSION
void nearest_code_rows(const Problem& p, int64_t row_begin, int64_t row_end, float sqrt_ee_max, int64_t* tokens,
                       uint8_t* uncertain) {
  std::array<LaneState, kChunkRows> state;
  for (int64_t r0 = row_begin; r0 < row_end; r0 += kChunkRows) {
    const int64_t rows = std::min(kChunkRows, row_end - r0);
    for (int64_t r = 0; r < rows; ++r) {
      state[r].best.fill(std::numeric_limits<float>::infinity());
      state[r].second.fill(std::numeric_limits<float>::infinity());
      state[r].index.fill(0);
    }
    for (int64_t c0 = 0; c0 < p.Vp; c0 += kChunkCodes) {
      const int64_t c1 = std::min(p.Vp, c0 + kChunkCodes);
      int64_t r = 0;
      for (; r + kTileRows <= rows; r += kTileRows) {
        for (int64_t v0 = c0; v0 < c1; v0 += kLanes) micro_tile<kTileRows>(p, r0 + r, v0, &state[r]);
      }
      for (; r < rows; ++r) {
        for (int64_t v0 = c0; v0 < c1; v0 += kLanes) micro_tile<1>(p, r0 + r, v0, &state[r]);
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

at::Tensor nearest_code_f32(const at::Tensor& z, const at::Tensor& codebook) {
  const int64_t N = z.size(0), C = z.size(1), V = codebook.size(0);
  auto tokens = at::empty({N}, z.options().dtype(at::kLong));
  if (N == 0) return tokens;
  TORCH_CHECK(V <= std::numeric_limits<int32_t>::max(), "nearest_code: codebook has too many codes (", V, ")");

  // |z|^2 and |e|^2 exactly as the reference computes them (same ops, same shapes, same rounding).
  const at::Tensor zz = z.square().sum(1);
  const at::Tensor ee = codebook.square().sum(1);

  const int64_t Vp = (V + kLanes - 1) / kLanes * kLanes;
  auto codes_t = at::empty({C, Vp}, z.options());
  auto ee_padded = at::empty({Vp}, z.options());
  float sqrt_ee_max = 0.0f;
  {
    const float* cb = codebook.data_ptr<float>();
    float* ct = codes_t.data_ptr<float>();
    for (int64_t k = 0; k < C; ++k) {
      for (int64_t v = 0; v < V; ++v) ct[k * Vp + v] = cb[v * C + k];
      for (int64_t v = V; v < Vp; ++v) ct[k * Vp + v] = 0.0f;
    }
    const float* eep = ee.data_ptr<float>();
    float* eo = ee_padded.data_ptr<float>();
    float ee_max = 0.0f;
    for (int64_t v = 0; v < V; ++v) {
      eo[v] = eep[v];
      // NaN/inf norms poison the bound (sqrt_ee_max becomes NaN/inf) so every row takes the fallback.
      ee_max = (eep[v] > ee_max || eep[v] != eep[v]) ? eep[v] : ee_max;
    }
    for (int64_t v = V; v < Vp; ++v) eo[v] = std::numeric_limits<float>::infinity();
    sqrt_ee_max = std::sqrt(ee_max);
  }

  const Problem problem{z.data_ptr<float>(), codes_t.data_ptr<float>(), zz.data_ptr<float>(),
                        ee_padded.data_ptr<float>(), C, Vp};
  auto uncertain = at::empty({N}, z.options().dtype(at::kBool));
  int64_t* tok = tokens.data_ptr<int64_t>();
  auto* unc = reinterpret_cast<uint8_t*>(uncertain.data_ptr<bool>());
  const int64_t grain = std::max<int64_t>(kTileRows, (int64_t{1} << 20) / std::max<int64_t>(1, Vp * C));
  at::parallel_for(0, N, grain, [&](int64_t begin, int64_t end) {
    nearest_code_rows(problem, begin, end, sqrt_ee_max, tok, unc);
  });

  bool any_uncertain = false;
  for (int64_t n = 0; n < N && !any_uncertain; ++n) any_uncertain = unc[n] != 0;
  if (any_uncertain) {
    // The reference formula itself, on the same shapes: its rounding, its ties, its NaN rule.
    at::Tensor dist = zz.unsqueeze(1) + ee;
    dist.addmm_(z, codebook.t(), /*beta=*/1, /*alpha=*/-2);
    const at::Tensor rows = uncertain.nonzero().squeeze(1);
    tokens.index_copy_(0, rows, dist.index_select(0, rows).argmin(1));
  }
  return tokens;
}

namespace {

at::Tensor nearest_code_cpu(const at::Tensor& z, const at::Tensor& codebook) {
  VF_CHECK_DIM(z, 2);
  VF_CHECK_DIM(codebook, 2);
  VF_CHECK_FLOATING(z);
  VF_CHECK_FLOATING(codebook);
  VF_CHECK_DEVICE(codebook, z.device());
  TORCH_CHECK(codebook.size(1) == z.size(1), "nearest_code: codebook must be (V, C) with C = z.size(1) = ", z.size(1),
              ", got shape ", codebook.sizes());
  TORCH_CHECK(codebook.size(0) > 0, "nearest_code: codebook must hold at least one code, got shape ",
              codebook.sizes());
  // float32 math for every input dtype: the distances (and their near-ties) are those of the reference.
  return nearest_code_f32(z.to(at::kFloat).contiguous(), codebook.to(at::kFloat).contiguous());
}

}  // namespace
}  // namespace var_fast::quant_cpu

TORCH_LIBRARY_IMPL(var_fast, CPU, m) { m.impl("nearest_code", &var_fast::quant_cpu::nearest_code_cpu); }

// adaln_modulate on CPU: y = LayerNorm(x) * (1 + scale) + shift over the last dim, float32 statistics.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "var_fast/adaln_checks.h"

namespace var_fast {
namespace {

// Eight partial sums so that the compiler can vectorize the reductions (and they round less).
constexpr int64_t kLanes = 8;

inline float sum_lanes(const float* lanes) {
  float total = 0.f;
  for (int64_t i = 0; i < kLanes; ++i) total += lanes[i];
  return total;
}

template <typename scalar_t>
void adaln_modulate_rows(const scalar_t* x, const float* scale_plus_one, const float* shift, scalar_t* y,
                         int64_t rows, int64_t L, int64_t C, float eps) {
  const int64_t grain = std::max<int64_t>(1, 32768 / C);
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> row(C);
    const int64_t C_body = C - C % kLanes;
    for (int64_t r = begin; r < end; ++r) {
      const scalar_t* xr = x + r * C;
      float lanes[kLanes] = {};
      for (int64_t c = 0; c < C_body; c += kLanes)
        for (int64_t i = 0; i < kLanes; ++i) {
          row[c + i] = static_cast<float>(xr[c + i]);
          lanes[i] += row[c + i];
        }
      float total = sum_lanes(lanes);
      for (int64_t c = C_body; c < C; ++c) {
        row[c] = static_cast<float>(xr[c]);
        total += row[c];
      }
      const float mean = total / static_cast<float>(C);
      // Second pass over the centred values: no cancellation for rows with a large mean.
      float sq_lanes[kLanes] = {};
      for (int64_t c = 0; c < C_body; c += kLanes)
        for (int64_t i = 0; i < kLanes; ++i) {
          const float d = row[c + i] - mean;
          sq_lanes[i] += d * d;
        }
      float sq = sum_lanes(sq_lanes);
      for (int64_t c = C_body; c < C; ++c) sq += (row[c] - mean) * (row[c] - mean);
      const float rstd = 1.f / std::sqrt(sq / static_cast<float>(C) + eps);
      const float* s1 = scale_plus_one + (r / L) * C;
      const float* sh = shift + (r / L) * C;
      scalar_t* yr = y + r * C;
      for (int64_t c = 0; c < C; ++c) yr[c] = static_cast<scalar_t>((row[c] - mean) * rstd * s1[c] + sh[c]);
    }
  });
}

at::Tensor adaln_modulate_cpu(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift, double eps) {
  adaln_checks::check_adaln_modulate_inputs(x, scale, shift, eps, at::Device(at::kCPU));
  const int64_t B = x.size(0), L = x.size(1), C = x.size(2);

  auto y = at::empty({B, L, C}, x.options());
  if (y.numel() == 0) return y;
  const auto xc = x.contiguous();
  // (B, C) float32 copies of the modulation: tiny, and they take care of any strides of the views.
  const auto scale_plus_one = scale.reshape({B, C}).to(at::kFloat).add(1.0).contiguous();
  const auto shift_f = shift.reshape({B, C}).to(at::kFloat).contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "adaln_modulate_cpu", [&] {
    adaln_modulate_rows<scalar_t>(xc.const_data_ptr<scalar_t>(), scale_plus_one.const_data_ptr<float>(),
                                  shift_f.const_data_ptr<float>(), y.mutable_data_ptr<scalar_t>(), B * L, L, C,
                                  static_cast<float>(eps));
  });
  return y;
}

}  // namespace
}  // namespace var_fast

TORCH_LIBRARY_IMPL(var_fast, CPU, m) { m.impl("adaln_modulate", &var_fast::adaln_modulate_cpu); }

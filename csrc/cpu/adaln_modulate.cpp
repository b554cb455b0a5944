// adaln_modulate on CPU: y = LayerNorm(x) * (1 + scale) + shift over the last dim, float32 statistics.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "var_fast/adaln_checks.h"
#include "var_fast/adaln_cpu.h"

namespace var_fast {
namespace {

template <typename scalar_t>
void adaln_modulate_rows(const scalar_t* x, const float* scale_plus_one, const float* shift, scalar_t* y,
                         int64_t rows, int64_t L, int64_t C, float eps) {
  const int64_t grain = std::max<int64_t>(1, 32768 / C);
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> row(C);
    for (int64_t r = begin; r < end; ++r) {
      const scalar_t* xr = x + r * C;
      for (int64_t c = 0; c < C; ++c) row[c] = static_cast<float>(xr[c]);
      adaln_cpu::modulate_row(row.data(), scale_plus_one + (r / L) * C, shift + (r / L) * C, y + r * C, C, eps);
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

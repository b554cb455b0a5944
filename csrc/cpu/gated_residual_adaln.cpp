// gated_residual_adaln on CPU: out = x + gamma * y (gated_residual, rounded to x's dtype), then
// h = LayerNorm(out) * (1 + scale) + shift (adaln_modulate's row arithmetic) in one pass over the rows:
// bit for bit the two ops in sequence, with one read of x and y and no second walk over the residual.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "var_fast/adaln_cpu.h"
#include "var_fast/residual_adaln_checks.h"

namespace var_fast {
namespace {

template <typename scalar_t>
void gated_residual_adaln_rows(const scalar_t* x, const scalar_t* y, const float* gamma, const float* scale_plus_one,
                               const float* shift, scalar_t* out, scalar_t* h, int64_t rows, int64_t L, int64_t C,
                               float eps) {
  const int64_t grain = std::max<int64_t>(1, 32768 / C);
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> row(C);
    for (int64_t r = begin; r < end; ++r) {
      const scalar_t* xr = x + r * C;
      const scalar_t* yr = y + r * C;
      const int64_t b = r / L;
      const float* g = gamma + b * C;
      scalar_t* o = out + r * C;
      for (int64_t c = 0; c < C; ++c) {
        o[c] = static_cast<scalar_t>(static_cast<float>(xr[c]) + g[c] * static_cast<float>(yr[c]));
        row[c] = static_cast<float>(o[c]);  // the rounded residual is what adaln_modulate would read
      }
      adaln_cpu::modulate_row(row.data(), scale_plus_one + b * C, shift + b * C, h + r * C, C, eps);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> gated_residual_adaln_cpu(const at::Tensor& x, const at::Tensor& y,
                                                            const at::Tensor& gamma, const at::Tensor& scale,
                                                            const at::Tensor& shift, double eps) {
  residual_adaln_checks::check_gated_residual_adaln_inputs(x, y, gamma, scale, shift, eps, at::Device(at::kCPU));
  const int64_t B = x.size(0), L = x.size(1), C = x.size(2);

  auto out = at::empty({B, L, C}, x.options());
  auto h = at::empty({B, L, C}, x.options());
  if (out.numel() == 0) return {out, h};
  const auto xc = x.contiguous();
  const auto yc = y.contiguous();
  // (B, C) float32 copies of the modulation: tiny, and they take care of any strides of the views.
  const auto gamma_f = gamma.reshape({B, C}).to(at::kFloat).contiguous();
  const auto scale_plus_one = scale.reshape({B, C}).to(at::kFloat).add(1.0).contiguous();
  const auto shift_f = shift.reshape({B, C}).to(at::kFloat).contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "gated_residual_adaln_cpu", [&] {
    gated_residual_adaln_rows<scalar_t>(xc.const_data_ptr<scalar_t>(), yc.const_data_ptr<scalar_t>(),
                                        gamma_f.const_data_ptr<float>(), scale_plus_one.const_data_ptr<float>(),
                                        shift_f.const_data_ptr<float>(), out.mutable_data_ptr<scalar_t>(),
                                        h.mutable_data_ptr<scalar_t>(), B * L, L, C, static_cast<float>(eps));
  });
  return {out, h};
}

}  // namespace
}  // namespace var_fast

TORCH_LIBRARY_IMPL(var_fast, CPU, m) { m.impl("gated_residual_adaln", &var_fast::gated_residual_adaln_cpu); }

// gated_residual on CPU: x + gamma * y with gamma (B, 1, C), float32 arithmetic, one rounding.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>

#include "var_fast/adaln_checks.h"

namespace var_fast {
namespace {

template <typename scalar_t>
void gated_residual_rows(const scalar_t* x, const scalar_t* y, const float* gamma, scalar_t* out, int64_t rows,
                         int64_t L, int64_t C) {
  const int64_t grain = std::max<int64_t>(1, 32768 / C);
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const scalar_t* xr = x + r * C;
      const scalar_t* yr = y + r * C;
      const float* g = gamma + (r / L) * C;
      scalar_t* o = out + r * C;
      for (int64_t c = 0; c < C; ++c)
        o[c] = static_cast<scalar_t>(static_cast<float>(xr[c]) + g[c] * static_cast<float>(yr[c]));
    }
  });
}

at::Tensor gated_residual_cpu(const at::Tensor& x, const at::Tensor& y, const at::Tensor& gamma) {
  adaln_checks::check_gated_residual_inputs(x, y, gamma, at::Device(at::kCPU));
  const int64_t B = x.size(0), L = x.size(1), C = x.size(2);

  auto out = at::empty({B, L, C}, x.options());
  if (out.numel() == 0) return out;
  const auto xc = x.contiguous();
  const auto yc = y.contiguous();
  const auto gamma_f = gamma.reshape({B, C}).to(at::kFloat).contiguous();  // any strides of the view
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "gated_residual_cpu", [&] {
    gated_residual_rows<scalar_t>(xc.const_data_ptr<scalar_t>(), yc.const_data_ptr<scalar_t>(),
                                  gamma_f.const_data_ptr<float>(), out.mutable_data_ptr<scalar_t>(), B * L, L, C);
  });
  return out;
}

}  // namespace
}  // namespace var_fast

TORCH_LIBRARY_IMPL(var_fast, CPU, m) { m.impl("gated_residual", &var_fast::gated_residual_cpu); }

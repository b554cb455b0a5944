// gated_residual_adaln on the kernel device: checks, allocation and the launch plan of
// var_fast::residual_adaln::gated_residual_adaln_kernel (kernel: var_fast/residual_adaln.cuh, plan:
// var_fast/residual_adaln_launch.h).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cstdint>
#include <limits>
#include <tuple>

#include "var_fast/alignment.h"
#include "var_fast/kernel_device.h"
#include "var_fast/residual_adaln_checks.h"
#include "var_fast/residual_adaln_launch.h"

namespace var_fast {
namespace {

std::tuple<at::Tensor, at::Tensor> gated_residual_adaln_on_device(const at::Tensor& x, const at::Tensor& y,
                                                                  const at::Tensor& gamma, const at::Tensor& scale,
                                                                  const at::Tensor& shift, double eps) {
  VF_CHECK_KERNEL_DEVICE("gated_residual_adaln", x);
  residual_adaln_checks::check_gated_residual_adaln_inputs(x, y, gamma, scale, shift, eps, x.device());
  const int64_t B = x.size(0), L = x.size(1), C = x.size(2);
  TORCH_CHECK(C <= std::numeric_limits<int32_t>::max(), "gated_residual_adaln: x's last dim must fit in int32, got ",
              C);
  TORCH_CHECK(residual_adaln::blocks(B * L) <= std::numeric_limits<int32_t>::max(),
              "gated_residual_adaln: too many rows (B * L) for one grid: ", B * L);

  const KernelDeviceGuard guard(x.device());
  const Stream stream = current_stream();
  auto out = at::empty({B, L, C}, x.options());
  auto h = at::empty({B, L, C}, x.options());
  if (out.numel() == 0) return {out, h};
  const auto xc = x.contiguous();
  const auto yc = y.contiguous();
  // The model's (B, 1, C) views from unbind(2) have unit stride along C and are read in place.
  const auto g = gamma.stride(2) == 1 ? gamma : gamma.contiguous();
  const auto sc = scale.stride(2) == 1 ? scale : scale.contiguous();
  const auto sh = shift.stride(2) == 1 ? shift : shift.contiguous();
  const DType dtype = kernel_dtype(x);

  residual_adaln::Params params;
  params.x = xc.const_data_ptr();
  params.y = yc.const_data_ptr();
  params.gamma = g.const_data_ptr();
  params.gamma_stride_b = g.stride(0);
  params.scale = sc.const_data_ptr();
  params.scale_stride_b = sc.stride(0);
  params.shift = sh.const_data_ptr();
  params.shift_stride_b = sh.stride(0);
  params.out = out.mutable_data_ptr();
  params.h = h.mutable_data_ptr();
  params.rows = B * L;
  params.L = L;
  params.C = static_cast<int>(C);
  params.eps = static_cast<float>(eps);
  const bool aligned = is_aligned16(params.x) && is_aligned16(params.y) && is_aligned16(params.gamma) &&
                       is_aligned16(params.scale) && is_aligned16(params.shift) && is_aligned16(params.out) &&
                       is_aligned16(params.h);
  params.vectorized = residual_adaln::vectorized(dtype, B, C, params.gamma_stride_b, params.scale_stride_b,
                                                 params.shift_stride_b, aligned);
  residual_adaln::run_gated_residual_adaln(params, dtype, residual_adaln::plan(params), stream);
  return {out, h};
}

}  // namespace
}  // namespace var_fast

TORCH_LIBRARY_IMPL(VAR_FAST_KERNEL_NAMESPACE, VAR_FAST_KERNEL_DISPATCH_KEY, m) {
  m.impl("gated_residual_adaln", &var_fast::gated_residual_adaln_on_device);
}

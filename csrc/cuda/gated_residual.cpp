// gated_residual on the kernel device: checks, allocation and the launch plan of
// var_fast::adaln::gated_residual_kernel (kernel: var_fast/adaln.cuh, plan: var_fast/adaln_launch.h).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cstdint>

#include "var_fast/adaln_checks.h"
#include "var_fast/adaln_launch.h"
#include "var_fast/alignment.h"
#include "var_fast/kernel_device.h"

namespace var_fast {
namespace {

at::Tensor gated_residual_on_device(const at::Tensor& x, const at::Tensor& y, const at::Tensor& gamma) {
  VF_CHECK_KERNEL_DEVICE("gated_residual", x);
  adaln_checks::check_gated_residual_inputs(x, y, gamma, x.device());
  const int64_t B = x.size(0), L = x.size(1), C = x.size(2);

  const KernelDeviceGuard guard(x.device());
  const Stream stream = current_stream();
  auto out = at::empty({B, L, C}, x.options());
  if (out.numel() == 0) return out;
  const auto xc = x.contiguous();
  const auto yc = y.contiguous();
  const auto g = gamma.stride(2) == 1 ? gamma : gamma.contiguous();  // unbind views are read in place
  const DType dtype = kernel_dtype(x);

  adaln::GatedResidualParams params;
  params.x = xc.const_data_ptr();
  params.y = yc.const_data_ptr();
  params.gamma = g.const_data_ptr();
  params.gamma_stride_b = g.stride(0);
  params.out = out.mutable_data_ptr();
  params.numel = out.numel();
  params.C = C;
  params.L = L;
  const bool aligned = is_aligned16(params.x) && is_aligned16(params.y) && is_aligned16(params.gamma) &&
                       is_aligned16(params.out);
  params.vectorized = adaln::gated_residual_vectorized(dtype, B, C, params.gamma_stride_b, aligned);
  adaln::run_gated_residual(params, dtype, adaln::plan_gated_residual(params, dtype), stream);
  return out;
}

}  // namespace
}  // namespace var_fast

TORCH_LIBRARY_IMPL(VAR_FAST_KERNEL_NAMESPACE, VAR_FAST_KERNEL_DISPATCH_KEY, m) {
  m.impl("gated_residual", &var_fast::gated_residual_on_device);
}

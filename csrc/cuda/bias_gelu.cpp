// bias_gelu on the kernel device: checks, allocation and the launch plan of var_fast::bias_gelu::bias_gelu_kernel
// (kernel: var_fast/bias_gelu.cuh, plan: var_fast/bias_gelu_launch.h).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cstdint>

#include "var_fast/alignment.h"
#include "var_fast/bias_gelu_launch.h"
#include "var_fast/kernel_device.h"
#include "var_fast/residual_adaln_checks.h"

namespace var_fast {
namespace {

at::Tensor bias_gelu_on_device(const at::Tensor& x, const at::Tensor& bias) {
  VF_CHECK_KERNEL_DEVICE("bias_gelu", x);
  residual_adaln_checks::check_bias_gelu_inputs(x, bias, x.device());

  const KernelDeviceGuard guard(x.device());
  const Stream stream = current_stream();
  auto out = at::empty(x.sizes(), x.options());
  if (out.numel() == 0) return out;
  const auto xc = x.contiguous();
  const auto bc = bias.contiguous();
  const DType dtype = kernel_dtype(x);

  bias_gelu::Params params;
  params.x = xc.const_data_ptr();
  params.bias = bc.const_data_ptr();
  params.out = out.mutable_data_ptr();
  params.numel = out.numel();
  params.N = x.size(-1);
  params.vectorized = bias_gelu::vectorized(dtype, params.N, is_aligned16(params.x) && is_aligned16(params.bias) &&
                                                                 is_aligned16(params.out));
  bias_gelu::run_bias_gelu(params, dtype, bias_gelu::plan(params, dtype), stream);
  return out;
}

}  // namespace
}  // namespace var_fast

TORCH_LIBRARY_IMPL(VAR_FAST_KERNEL_NAMESPACE, VAR_FAST_KERNEL_DISPATCH_KEY, m) {
  m.impl("bias_gelu", &var_fast::bias_gelu_on_device);
}

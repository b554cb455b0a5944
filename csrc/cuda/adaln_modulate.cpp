// adaln_modulate on the kernel device: checks, allocation and the launch plan of
// var_fast::adaln::adaln_modulate_kernel (kernel: var_fast/adaln.cuh, plan: var_fast/adaln_launch.h).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cstdint>
#include <limits>

#include "var_fast/adaln_checks.h"
#include "var_fast/adaln_launch.h"
#include "var_fast/alignment.h"
#include "var_fast/kernel_device.h"

namespace var_fast {
namespace {

at::Tensor adaln_modulate_on_device(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift,
                                    double eps) {
  VF_CHECK_KERNEL_DEVICE("adaln_modulate", x);
  adaln_checks::check_adaln_modulate_inputs(x, scale, shift, eps, x.device());
  const int64_t B = x.size(0), L = x.size(1), C = x.size(2);
  TORCH_CHECK(C <= std::numeric_limits<int32_t>::max(), "adaln_modulate: x's last dim must fit in int32, got ", C);
  TORCH_CHECK(adaln::adaln_modulate_blocks(B * L) <= std::numeric_limits<int32_t>::max(),
              "adaln_modulate: too many rows (B * L) for one grid: ", B * L);

  const KernelDeviceGuard guard(x.device());
  const Stream stream = current_stream();
  auto y = at::empty({B, L, C}, x.options());
  if (y.numel() == 0) return y;
  const auto xc = x.contiguous();
  // The model's (B, 1, C) views from unbind(2) have unit stride along C and are read in place.
  const auto sc = scale.stride(2) == 1 ? scale : scale.contiguous();
  const auto sh = shift.stride(2) == 1 ? shift : shift.contiguous();
  const DType dtype = kernel_dtype(x);

  adaln::ModulateParams params;
  params.x = xc.const_data_ptr();
  params.scale = sc.const_data_ptr();
  params.scale_stride_b = sc.stride(0);
  params.shift = sh.const_data_ptr();
  params.shift_stride_b = sh.stride(0);
  params.y = y.mutable_data_ptr();
  params.rows = B * L;
  params.L = L;
  params.C = static_cast<int>(C);
  params.eps = static_cast<float>(eps);
  const bool aligned = is_aligned16(params.x) && is_aligned16(params.y) && is_aligned16(params.scale) &&
                       is_aligned16(params.shift);
  params.vectorized = adaln::adaln_modulate_vectorized(dtype, B, C, params.scale_stride_b, params.shift_stride_b,
                                                       aligned);
  adaln::run_adaln_modulate(params, dtype, adaln::plan_adaln_modulate(params), stream);
  return y;
}

}  // namespace
}  // namespace var_fast

TORCH_LIBRARY_IMPL(VAR_FAST_KERNEL_NAMESPACE, VAR_FAST_KERNEL_DISPATCH_KEY, m) {
  m.impl("adaln_modulate", &var_fast::adaln_modulate_on_device);
}

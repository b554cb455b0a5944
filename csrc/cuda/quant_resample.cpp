// area_downsample and bicubic_upsample on the kernel device: checks, allocation and the launch plans of
// area_kernel / bicubic_kernel (var_fast/quant.cuh). Any floating dtype and strides in, float32
// accumulation, contiguous output.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cstdint>

#include "var_fast/check.h"
#include "var_fast/kernel_device.h"
#include "var_fast/quant_cpu.h"
#include "var_fast/quant_device_ops.h"
#include "var_fast/quant_launch.h"

namespace var_fast::quant_cuda {
namespace {

Strides4 strides_of(const at::Tensor& t) { return Strides4{t.stride(0), t.stride(1), t.stride(2), t.stride(3)}; }

// out (B, C, size, size) elements at strides `os` (or the (B*size*size, C) rows) = area average of x.
void area_into(const at::Tensor& x, int64_t size, void* out, Strides4 os, bool channels_fastest) {
  AreaParams params;
  params.x = x.const_data_ptr();
  params.xs = strides_of(x);
  params.B = x.size(0);
  params.C = x.size(1);
  params.H = x.size(2);
  params.W = x.size(3);
  params.size = size;
  params.out = out;
  params.os = os;
  params.channels_fastest = channels_fastest;
  run_area(params, kernel_dtype(x), plan_grid_stride(params.B * params.C * size * size), current_stream());
}

at::Tensor area_downsample_on_device(const at::Tensor& x, int64_t size) {
  VF_CHECK_KERNEL_DEVICE("area_downsample", x);
  var_fast::quant::check_image_args(x, size, "area_downsample");
  const KernelDeviceGuard guard(x.device());
  auto out = at::empty({x.size(0), x.size(1), size, size}, x.options());
  if (out.numel() == 0) return out;
  area_into(x, size, out.mutable_data_ptr(), strides_of(out), /*channels_fastest=*/false);
  return out;
}

at::Tensor bicubic_upsample_on_device(const at::Tensor& x, int64_t size) {
  VF_CHECK_KERNEL_DEVICE("bicubic_upsample", x);
  var_fast::quant::check_image_args(x, size, "bicubic_upsample");
  const KernelDeviceGuard guard(x.device());
  auto out = at::empty({x.size(0), x.size(1), size, size}, x.options());
  if (out.numel() == 0) return out;
  BicubicParams params;
  params.x = x.const_data_ptr();
  params.xs = strides_of(x);
  params.B = x.size(0);
  params.C = x.size(1);
  params.h = x.size(2);
  params.w = x.size(3);
  params.size = size;
  params.out = out.mutable_data_ptr();
  run_bicubic(params, kernel_dtype(x), plan_grid_stride(out.numel()), current_stream());
  return out;
}

}  // namespace

at::Tensor area_downsample_f32(const at::Tensor& x, int64_t size, bool channels_last_rows) {
  const int64_t B = x.size(0), C = x.size(1);
  if (channels_last_rows) {
    auto out = at::empty({B * size * size, C}, x.options());
    if (out.numel() > 0) {
      area_into(x, size, out.mutable_data_ptr(), Strides4{size * size * C, 1, size * C, C}, /*channels_fastest=*/true);
    }
    return out;
  }
  auto out = at::empty({B, C, size, size}, x.options());
  if (out.numel() > 0) area_into(x, size, out.mutable_data_ptr(), strides_of(out), /*channels_fastest=*/false);
  return out;
}

}  // namespace var_fast::quant_cuda

TORCH_LIBRARY_IMPL(VAR_FAST_KERNEL_NAMESPACE, VAR_FAST_KERNEL_DISPATCH_KEY, m) {
  m.impl("area_downsample", &var_fast::quant_cuda::area_downsample_on_device);
  m.impl("bicubic_upsample", &var_fast::quant_cuda::bicubic_upsample_on_device);
}

// area_downsample and bicubic_upsample on CUDA: launchers of area_kernel / bicubic_kernel
// (var_fast/quant.cuh). Any floating dtype and strides in, float32 accumulation, contiguous output.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>

#include "var_fast/check.h"
#include "var_fast/quant.cuh"

namespace var_fast::quant_cuda {
namespace {

constexpr int kThreads = 256;

Strides4 strides_of(const at::Tensor& t) { return Strides4{t.stride(0), t.stride(1), t.stride(2), t.stride(3)}; }

// A grid-stride loop: enough blocks to fill any GPU, never more than there is work.
unsigned blocks_for(int64_t total) {
  return static_cast<unsigned>(std::min<int64_t>((total + kThreads - 1) / kThreads, int64_t{1} << 16));
}

template <typename in_t, typename out_t>
void launch_area(const at::Tensor& x, int64_t size, out_t* out, Strides4 os, bool channels_fastest) {
  const int64_t B = x.size(0), C = x.size(1);
  const int64_t total = B * C * size * size;
  area_kernel<in_t, out_t><<<blocks_for(total), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
      x.const_data_ptr<in_t>(), strides_of(x), B, C, x.size(2), x.size(3), size, out, os, channels_fastest);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor area_downsample_cuda(const at::Tensor& x, int64_t size) {
  TORCH_CHECK(x.is_cuda(), "area_downsample: x must be a CUDA tensor, got ", x.device());
  var_fast::quant::check_image_args(x, size, "area_downsample");
  const c10::cuda::CUDAGuard guard(x.device());
  auto out = at::empty({x.size(0), x.size(1), size, size}, x.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "area_downsample_cuda", [&] {
    launch_area<scalar_t, scalar_t>(x, size, out.mutable_data_ptr<scalar_t>(), strides_of(out), false);
  });
  return out;
}

at::Tensor bicubic_upsample_cuda(const at::Tensor& x, int64_t size) {
  TORCH_CHECK(x.is_cuda(), "bicubic_upsample: x must be a CUDA tensor, got ", x.device());
  var_fast::quant::check_image_args(x, size, "bicubic_upsample");
  const c10::cuda::CUDAGuard guard(x.device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const int64_t B = x.size(0), C = x.size(1);
  auto out = at::empty({B, C, size, size}, x.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "bicubic_upsample_cuda", [&] {
    bicubic_kernel<scalar_t, scalar_t><<<blocks_for(out.numel()), kThreads, 0, stream>>>(
        x.const_data_ptr<scalar_t>(), strides_of(x), B, C, x.size(2), x.size(3), size,
        out.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace

at::Tensor area_downsample_f32(const at::Tensor& x, int64_t size, bool channels_last_rows) {
  const int64_t B = x.size(0), C = x.size(1);
  if (channels_last_rows) {
    auto out = at::empty({B * size * size, C}, x.options());
    if (out.numel() > 0) {
      launch_area<float, float>(x, size, out.mutable_data_ptr<float>(), Strides4{size * size * C, 1, size * C, C},
                                /*channels_fastest=*/true);
    }
    return out;
  }
  auto out = at::empty({B, C, size, size}, x.options());
  if (out.numel() > 0) launch_area<float, float>(x, size, out.mutable_data_ptr<float>(), strides_of(out), false);
  return out;
}

}  // namespace var_fast::quant_cuda

TORCH_LIBRARY_IMPL(var_fast, CUDA, m) {
  m.impl("area_downsample", &var_fast::quant_cuda::area_downsample_cuda);
  m.impl("bicubic_upsample", &var_fast::quant_cuda::bicubic_upsample_cuda);
}

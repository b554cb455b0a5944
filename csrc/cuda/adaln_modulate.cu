// adaln_modulate on CUDA: launcher of var_fast::adaln::adaln_modulate_kernel (csrc/include/var_fast/adaln.cuh).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdint>

#include "var_fast/adaln.cuh"
#include "var_fast/adaln_checks.h"

namespace var_fast {
namespace {

bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

at::Tensor adaln_modulate_cuda(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift, double eps) {
  TORCH_CHECK(x.is_cuda(), "x must be a CUDA tensor, got ", x.device());
  adaln_checks::check_adaln_modulate_inputs(x, scale, shift, eps, x.device());
  const int64_t B = x.size(0), L = x.size(1), C = x.size(2);
  TORCH_CHECK(C <= INT32_MAX, "x's last dim must fit in int32, got ", C);

  const c10::cuda::CUDAGuard guard(x.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  auto y = at::empty({B, L, C}, x.options());
  if (y.numel() == 0) return y;
  const auto xc = x.contiguous();
  // The model's (B, 1, C) views from unbind(2) have unit stride along C and are read in place.
  const auto sc = scale.stride(2) == 1 ? scale : scale.contiguous();
  const auto sh = shift.stride(2) == 1 ? shift : shift.contiguous();
  const int64_t rows = B * L;
  const int64_t blocks = (rows + adaln::kRowsPerBlock - 1) / adaln::kRowsPerBlock;
  constexpr int threads = adaln::kRowsPerBlock * adaln::kWarpSize;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "adaln_modulate_cuda", [&] {
    constexpr int kVec = 16 / sizeof(scalar_t);
    const auto* xp = xc.const_data_ptr<scalar_t>();
    const auto* sp = sc.const_data_ptr<scalar_t>();
    const auto* hp = sh.const_data_ptr<scalar_t>();
    auto* yp = y.mutable_data_ptr<scalar_t>();
    const bool vectorized = C % kVec == 0 && aligned16(xp) && aligned16(yp) && aligned16(sp) && aligned16(hp) &&
                            (B == 1 || (sc.stride(0) % kVec == 0 && sh.stride(0) % kVec == 0));
    if (vectorized) {
      adaln::adaln_modulate_kernel<scalar_t, kVec><<<blocks, threads, 0, stream>>>(
          xp, sp, sc.stride(0), hp, sh.stride(0), yp, rows, L, static_cast<int>(C), static_cast<float>(eps));
    } else {
      adaln::adaln_modulate_kernel<scalar_t, 1><<<blocks, threads, 0, stream>>>(
          xp, sp, sc.stride(0), hp, sh.stride(0), yp, rows, L, static_cast<int>(C), static_cast<float>(eps));
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return y;
}

}  // namespace
}  // namespace var_fast

TORCH_LIBRARY_IMPL(var_fast, CUDA, m) { m.impl("adaln_modulate", &var_fast::adaln_modulate_cuda); }

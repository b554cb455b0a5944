// gated_residual on CUDA: launcher of var_fast::adaln::gated_residual_kernel (csrc/include/var_fast/adaln.cuh).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#include "var_fast/adaln.cuh"
#include "var_fast/adaln_checks.h"

namespace var_fast {
namespace {

bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

template <typename T, int VEC>
void launch_gated_residual(const T* x, const T* y, const T* gamma, int64_t gamma_stride_b, T* out, int64_t numel,
                           int64_t C, int64_t L, cudaStream_t stream) {
  constexpr int threads = 256;
  const int64_t packs = numel / VEC;
  // A grid-stride loop: enough blocks to fill any GPU, never more than there is work.
  const int64_t blocks = std::min<int64_t>((packs + threads - 1) / threads, int64_t{1} << 16);
  adaln::gated_residual_kernel<T, VEC>
      <<<blocks, threads, 0, stream>>>(x, y, gamma, gamma_stride_b, out, packs, C / VEC, L);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor gated_residual_cuda(const at::Tensor& x, const at::Tensor& y, const at::Tensor& gamma) {
  TORCH_CHECK(x.is_cuda(), "x must be a CUDA tensor, got ", x.device());
  adaln_checks::check_gated_residual_inputs(x, y, gamma, x.device());
  const int64_t B = x.size(0), L = x.size(1), C = x.size(2);

  const c10::cuda::CUDAGuard guard(x.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  auto out = at::empty({B, L, C}, x.options());
  if (out.numel() == 0) return out;
  const auto xc = x.contiguous();
  const auto yc = y.contiguous();
  const auto g = gamma.stride(2) == 1 ? gamma : gamma.contiguous();  // unbind views are read in place

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "gated_residual_cuda", [&] {
    constexpr int kVec = 16 / sizeof(scalar_t);
    const auto* xp = xc.const_data_ptr<scalar_t>();
    const auto* yp = yc.const_data_ptr<scalar_t>();
    const auto* gp = g.const_data_ptr<scalar_t>();
    auto* op = out.mutable_data_ptr<scalar_t>();
    const bool vectorized = C % kVec == 0 && aligned16(xp) && aligned16(yp) && aligned16(gp) && aligned16(op) &&
                            (B == 1 || g.stride(0) % kVec == 0);
    if (vectorized)
      launch_gated_residual<scalar_t, kVec>(xp, yp, gp, g.stride(0), op, out.numel(), C, L, stream);
    else
      launch_gated_residual<scalar_t, 1>(xp, yp, gp, g.stride(0), op, out.numel(), C, L, stream);
  });
  return out;
}

}  // namespace
}  // namespace var_fast

TORCH_LIBRARY_IMPL(var_fast, CUDA, m) { m.impl("gated_residual", &var_fast::gated_residual_cuda); }

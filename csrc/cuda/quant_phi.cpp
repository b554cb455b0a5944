// phi_blend on CUDA, and the Phi of a code map used by the sampler step and the encoder: launchers of
// phi_tile_kernel (var_fast/quant.cuh), which stages a tile of rows with its zero halo in shared memory
// and does the 3x3 convolution, bias and blend from there.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>

#include "var_fast/check.h"
#include "var_fast/quant.cuh"

namespace var_fast::quant_cuda {
namespace {

constexpr int64_t kDefaultSharedBytes = 48 * 1024;

// Rows per tile: enough blocks for about two per SM, within shared memory (opting in beyond 48 KiB only
// when a single row does not fit), then the launch.
template <class Source, class Sink>
void launch_phi(const Source& source, const Sink& sink, const at::Tensor& weight_t, const at::Tensor& bias,
                double ratio, int64_t B, int64_t C, int64_t H, int64_t W) {
  const cudaDeviceProp* props = at::cuda::getCurrentDeviceProperties();
  const int64_t row_bytes = C * (W + 2) * static_cast<int64_t>(sizeof(float));
  const int64_t limit = std::max<int64_t>(kDefaultSharedBytes, props->sharedMemPerBlockOptin);
  const int64_t fit_default = kDefaultSharedBytes / row_bytes - 2, fit_max = limit / row_bytes - 2;
  TORCH_CHECK(fit_max >= 1, "phi: C * (W + 2) = ", C * (W + 2), " floats per row is too large for shared memory");
  TORCH_CHECK(B <= 65535, "phi: batch ", B, " exceeds the grid limit 65535");
  const int64_t tiles_wanted = std::max<int64_t>(1, (2 * props->multiProcessorCount + B - 1) / B);
  int64_t rows = std::max<int64_t>(1, (H + tiles_wanted - 1) / tiles_wanted);
  rows = std::min({rows, H, fit_default >= 1 ? fit_default : fit_max});
  const int64_t shared_bytes = C * (rows + 2) * (W + 2) * static_cast<int64_t>(sizeof(float));
  if (shared_bytes > kDefaultSharedBytes) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(phi_tile_kernel<Source, Sink>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(shared_bytes)));
  }
  const dim3 grid(static_cast<unsigned>((H + rows - 1) / rows), static_cast<unsigned>(B));
  // As the reference's Phi: the scalars are cast to float32.
  const float keep = static_cast<float>(1.0 - ratio), mix = static_cast<float>(ratio);
  phi_tile_kernel<Source, Sink><<<grid, kPhiThreads, shared_bytes, at::cuda::getCurrentCUDAStream()>>>(
      source, sink, weight_t.const_data_ptr<float>(), bias.const_data_ptr<float>(), keep, mix, C, weight_t.size(2), H,
      W, rows);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor phi_blend_cuda(const at::Tensor& h, const at::Tensor& weight, const at::Tensor& bias, double ratio) {
  TORCH_CHECK(h.is_cuda(), "phi_blend: h must be a CUDA tensor, got ", h.device());
  TORCH_CHECK(h.dim() == 4, "phi_blend: h must be 4-D (B, C, H, W), got shape ", h.sizes());
  VF_CHECK_FLOATING(h);
  var_fast::quant::check_phi_args(weight, bias, h.size(1), h.device(), "phi_blend", "weight", "bias");
  const c10::cuda::CUDAGuard guard(h.device());
  const int64_t B = h.size(0), C = h.size(1), H = h.size(2), W = h.size(3);
  auto out = at::empty({B, C, H, W}, h.options());
  if (out.numel() == 0) return out;
  const at::Tensor weight_t = phi_weight_layout(weight);
  const at::Tensor bias_f = bias.to(at::kFloat).contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "phi_blend_cuda", [&] {
    const DenseSource<scalar_t> source{h.const_data_ptr<scalar_t>(),
                                       Strides4{h.stride(0), h.stride(1), h.stride(2), h.stride(3)}};
    launch_phi(source, StoreSink<scalar_t>{out.mutable_data_ptr<scalar_t>()}, weight_t, bias_f, ratio, B, C, H, W);
  });
  return out;
}

}  // namespace

at::Tensor phi_weight_layout(const at::Tensor& weight) {
  const int64_t C = weight.size(0);
  const int64_t Cp = (C + kPhiOcBlock - 1) / kPhiOcBlock * kPhiOcBlock;
  auto weight_t = at::zeros({C, 9, Cp}, weight.options().dtype(at::kFloat));
  weight_t.narrow(2, 0, C).copy_(weight.to(at::kFloat).reshape({C, C, 9}).permute({1, 2, 0}));
  return weight_t;
}

void embed_phi_accumulate(const at::Tensor& tokens, const at::Tensor& codes, int64_t pn, const at::Tensor& weight_t,
                          const at::Tensor& bias, double ratio, const at::Tensor& target, float sign) {
  const int64_t B = target.size(0), C = target.size(1), H = target.size(2), W = target.size(3);
  if (target.numel() == 0) return;
  const EmbedSource source{tokens.const_data_ptr<int64_t>(), codes.const_data_ptr<float>(), C, pn, H, W};
  launch_phi(source, AccumulateSink{target.mutable_data_ptr<float>(), sign}, weight_t, bias, ratio, B, C, H, W);
}

}  // namespace var_fast::quant_cuda

TORCH_LIBRARY_IMPL(var_fast, CUDA, m) { m.impl("phi_blend", &var_fast::quant_cuda::phi_blend_cuda); }

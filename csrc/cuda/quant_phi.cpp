// phi_blend on the kernel device, and the Phi of a code map used by the sampler step and the encoder:
// checks, allocation and the tile plan of phi_tile_kernel (var_fast/quant.cuh), which stages a tile of
// rows with its zero halo in shared memory and does the 3x3 convolution, bias and blend from there.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <cstdint>

#include "var_fast/check.h"
#include "var_fast/kernel_device.h"
#include "var_fast/quant_cpu.h"
#include "var_fast/quant_device_ops.h"
#include "var_fast/quant_launch.h"

namespace var_fast::quant_cuda {
namespace {

// The parameters of Phi shared by phi_blend and the code-map Phi.
PhiParams phi_params(const at::Tensor& weight_t, const at::Tensor& bias, double ratio, int64_t B, int64_t C,
                     int64_t H, int64_t W) {
  PhiParams p;
  p.weight_t = weight_t.const_data_ptr<float>();
  p.bias = bias.const_data_ptr<float>();
  // As the reference's Phi: the scalars are cast to float32.
  p.keep = static_cast<float>(1.0 - ratio);
  p.mix = static_cast<float>(ratio);
  p.B = B;
  p.C = C;
  p.Cp = weight_t.size(2);
  p.H = H;
  p.W = W;
  return p;
}

PhiTilePlan phi_tile_plan(const at::Device& device, int64_t B, int64_t C, int64_t H, int64_t W) {
  const DeviceLimits& limits = device_limits(device);
  TORCH_CHECK(phi_tile_fits(C, W, limits), "phi: C * (W + 2) = ", C * (W + 2),
              " floats per row is too large for shared memory");
  TORCH_CHECK(B <= 65535, "phi: batch ", B, " exceeds the grid limit 65535");
  return plan_phi_tiles(B, C, H, W, limits);
}

at::Tensor phi_blend_on_device(const at::Tensor& h, const at::Tensor& weight, const at::Tensor& bias, double ratio) {
  VF_CHECK_KERNEL_DEVICE("phi_blend", h);
  TORCH_CHECK(h.dim() == 4, "phi_blend: h must be 4-D (B, C, H, W), got shape ", h.sizes());
  VF_CHECK_FLOATING(h);
  var_fast::quant::check_phi_args(weight, bias, h.size(1), h.device(), "phi_blend", "weight", "bias");
  const KernelDeviceGuard guard(h.device());
  const int64_t B = h.size(0), C = h.size(1), H = h.size(2), W = h.size(3);
  auto out = at::empty({B, C, H, W}, h.options());
  if (out.numel() == 0) return out;
  const at::Tensor weight_t = phi_weight_layout(weight);
  const at::Tensor bias_f = bias.to(at::kFloat).contiguous();
  PhiBlendParams params;
  params.phi = phi_params(weight_t, bias_f, ratio, B, C, H, W);
  params.h = h.const_data_ptr();
  params.hs = Strides4{h.stride(0), h.stride(1), h.stride(2), h.stride(3)};
  params.out = out.mutable_data_ptr();
  run_phi_blend(params, kernel_dtype(h), phi_tile_plan(h.device(), B, C, H, W), current_stream());
  return out;
}

}  // namespace

at::Tensor phi_weight_layout(const at::Tensor& weight) {
  const int64_t C = weight.size(0);
  auto weight_t = at::zeros({C, 9, phi_padded_channels(C)}, weight.options().dtype(at::kFloat));
  weight_t.narrow(2, 0, C).copy_(weight.to(at::kFloat).reshape({C, C, 9}).permute({1, 2, 0}));
  return weight_t;
}

void embed_phi_accumulate(const at::Tensor& tokens, const at::Tensor& codes, int64_t pn, const at::Tensor& weight_t,
                          const at::Tensor& bias, double ratio, const at::Tensor& target, float sign, int* status) {
  const int64_t B = target.size(0), C = target.size(1), H = target.size(2), W = target.size(3);
  if (target.numel() == 0) return;
  PhiEmbedParams params;
  params.phi = phi_params(weight_t, bias, ratio, B, C, H, W);
  params.tokens = tokens.const_data_ptr<int64_t>();
  params.codes = codes.const_data_ptr<float>();
  params.V = codes.size(0);
  params.pn = pn;
  params.status = status;
  params.target = target.mutable_data_ptr<float>();
  params.sign = sign;
  run_embed_phi(params, phi_tile_plan(target.device(), B, C, H, W), current_stream());
}

}  // namespace var_fast::quant_cuda

TORCH_LIBRARY_IMPL(VAR_FAST_KERNEL_NAMESPACE, VAR_FAST_KERNEL_DISPATCH_KEY, m) {
  m.impl("phi_blend", &var_fast::quant_cuda::phi_blend_on_device);
}

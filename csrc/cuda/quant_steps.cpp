// quant_sampler_step and quant_encode on the kernel device. The sampler step is one fused kernel (code
// lookup -> bicubic -> Phi -> f_hat +=, intermediates in shared memory) and the area downsample of f_hat;
// the encoder loop runs on the host over the scales with the same kernels plus nearest_code.
//
// Tokens outside [0, V): with a `status` tensor the Phi kernel reads them as code 0 and ORs
// kTokenOutOfRange into it, and nothing waits for the device (the sampler checks the status once per
// batch). Without one, the tokens are checked on the host first (one reduction, one synchronisation)
// with the CPU op's clear error; a CUDA graph cannot contain that wait, so under capture the step
// refuses to run without a status tensor. The encoder synchronises once per scale (nearest_code) and
// refuses to run under capture.
#include <ATen/core/Tensor.h>
#include <ATen/ops/aminmax.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/stack.h>
#include <torch/library.h>

#include <optional>
#include <vector>

#include "var_fast/check.h"
#include "var_fast/kernel_device.h"
#include "var_fast/quant_cpu.h"
#include "var_fast/quant_device_ops.h"
#include "var_fast/status_flags.h"

namespace var_fast::quant_cuda {
namespace {

// One reduction and one device-to-host copy: the clear error the CPU op gives, at the cost of a sync.
void check_tokens_in_range(const at::Tensor& tokens, int64_t V) {
  if (tokens.numel() == 0) return;
  const auto [lo, hi] = at::aminmax(tokens);
  const at::Tensor range = at::stack({lo, hi}).cpu();
  const int64_t low = range[0].item<int64_t>(), high = range[1].item<int64_t>();
  TORCH_CHECK(low >= 0 && high < V, "quant_sampler_step: token out of range: tokens must lie in [0, V) with V = ", V,
              ", got values in [", low, ", ", high, "]");
}

at::Tensor quant_sampler_step_on_device(const at::Tensor& tokens, const at::Tensor& codebook, const at::Tensor& f_hat,
                                        const at::Tensor& phi_weight, const at::Tensor& phi_bias, double ratio,
                                        int64_t next_size, const std::optional<at::Tensor>& status) {
  constexpr const char* op = "quant_sampler_step";
  VF_CHECK_KERNEL_DEVICE(op, f_hat);
  const int64_t pn = var_fast::quant::check_sampler_step_args(tokens, codebook, f_hat, phi_weight, phi_bias, next_size);
  if (status.has_value()) status::check_status_tensor(op, *status, f_hat.device());
  const KernelDeviceGuard guard(f_hat.device());
  TORCH_CHECK(status.has_value() || !stream_is_capturing(current_stream()), op,
              ": under CUDA graph capture, pass a status tensor (status=var_fast.ops.new_status(device)) and "
              "check it after the replay (ops.check_status): without one, the tokens are range-checked by a "
              "host read of the device, which a captured graph cannot do");
  const at::Tensor tok = tokens.contiguous();
  if (!status.has_value()) check_tokens_in_range(tok, codebook.size(0));
  // A non-contiguous f_hat is updated through a contiguous copy, written back.
  const at::Tensor target = f_hat.contiguous();
  if (f_hat.numel() > 0) {
    embed_phi_accumulate(tok, codebook.to(at::kFloat).contiguous(), pn, phi_weight_layout(phi_weight),
                         phi_bias.to(at::kFloat).contiguous(), ratio, target, 1.0f,
                         status.has_value() ? status->mutable_data_ptr<int>() : nullptr);
    if (!target.is_same(f_hat)) f_hat.copy_(target);
  }
  if (next_size == 0) return at::empty({0}, f_hat.options());
  return area_downsample_f32(target, next_size, /*channels_last_rows=*/false);
}

std::vector<at::Tensor> quant_encode_on_device(const at::Tensor& f, const at::Tensor& codebook,
                                               const at::Tensor& phi_weights, const at::Tensor& phi_biases,
                                               at::IntArrayRef phi_index, double ratio, at::IntArrayRef patch_nums) {
  VF_CHECK_KERNEL_DEVICE("quant_encode", f);
  var_fast::quant::check_encode_args(f, codebook, phi_weights, phi_biases, phi_index, patch_nums);
  const KernelDeviceGuard guard(f.device());
  TORCH_CHECK(!stream_is_capturing(current_stream()),
              "quant_encode: cannot run under CUDA graph capture: it waits for the device once per scale");
  const int64_t B = f.size(0), C = f.size(1), H = f.size(2), W = f.size(3), K = phi_weights.size(0);
  const int64_t S = static_cast<int64_t>(patch_nums.size());
  // Residual f_rest = f - sum of the Phi-refined code maps so far; f_hat itself is not needed for tokens.
  at::Tensor f_rest = at::empty({B, C, H, W}, f.options().dtype(at::kFloat));
  f_rest.copy_(f);
  const PreparedCodebook book = prepare_codebook_f32(codebook.to(at::kFloat).contiguous());
  const at::Tensor biases = phi_biases.to(at::kFloat).contiguous();
  std::vector<at::Tensor> weight_layouts;
  for (int64_t k = 0; k < K; ++k) weight_layouts.push_back(phi_weight_layout(phi_weights[k]));
  std::vector<at::Tensor> tokens_per_scale;
  tokens_per_scale.reserve(S);
  for (int64_t si = 0; si < S; ++si) {
    const int64_t pn = patch_nums[si];
    // (B*pn*pn, C) rows in (b, y, x) order = the reference's permute(0, 2, 3, 1).reshape(-1, C); at the
    // last scale (pn == H) the area average of single cells is an exact copy.
    const at::Tensor z = area_downsample_f32(f_rest, pn, /*channels_last_rows=*/true);
    const at::Tensor tokens = nearest_code_f32(z, book).view({B, pn * pn});
    tokens_per_scale.push_back(tokens);
    if (si + 1 < S) {  // the residual after the last scale is never used
      const int64_t k = phi_index[si];
      embed_phi_accumulate(tokens, book.codes, pn, weight_layouts[k], biases[k], ratio, f_rest, -1.0f);
    }
  }
  return tokens_per_scale;
}

}  // namespace
}  // namespace var_fast::quant_cuda

TORCH_LIBRARY_IMPL(VAR_FAST_KERNEL_NAMESPACE, VAR_FAST_KERNEL_DISPATCH_KEY, m) {
  m.impl("quant_sampler_step", &var_fast::quant_cuda::quant_sampler_step_on_device);
  m.impl("quant_encode", &var_fast::quant_cuda::quant_encode_on_device);
}

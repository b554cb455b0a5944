// quant_sampler_step and quant_encode on CPU, composed from the helpers of quant_nearest_code.cpp,
// quant_resample.cpp and quant_phi.cpp (declared in var_fast/quant_cpu.h). All arithmetic is float32:
// f_hat must be float32; other inputs of any floating dtype are converted once.
//
// Tokens outside [0, V) raise, or, with a `status` tensor, set its kTokenOutOfRange flag (as the CUDA op
// does without a host round trip) and are read as code 0, so that the step stays memory-safe.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <optional>
#include <vector>

#include "var_fast/check.h"
#include "var_fast/quant_cpu.h"
#include "var_fast/status_flags.h"

namespace var_fast::quant_cpu {
namespace {

// Flat position of the first token outside [0, V), or -1.
int64_t first_token_out_of_range(const at::Tensor& tokens, int64_t V) {
  const int64_t* t = tokens.const_data_ptr<int64_t>();
  const int64_t n = tokens.numel();
  for (int64_t i = 0; i < n; ++i) {
    if (t[i] < 0 || t[i] >= V) return i;
  }
  return -1;
}

// tokens with every value outside [0, V) replaced by code 0 (a copy).
at::Tensor out_of_range_as_code_zero(const at::Tensor& tokens, int64_t V) {
  at::Tensor safe = tokens.clone();
  int64_t* t = safe.mutable_data_ptr<int64_t>();
  for (int64_t i = 0, n = safe.numel(); i < n; ++i) {
    if (t[i] < 0 || t[i] >= V) t[i] = 0;
  }
  return safe;
}

at::Tensor quant_sampler_step_cpu(const at::Tensor& tokens, const at::Tensor& codebook, const at::Tensor& f_hat,
                                  const at::Tensor& phi_weight, const at::Tensor& phi_bias, double ratio,
                                  int64_t next_size, const std::optional<at::Tensor>& status) {
  constexpr const char* op = "quant_sampler_step";
  const int64_t pn = var_fast::quant::check_sampler_step_args(tokens, codebook, f_hat, phi_weight, phi_bias, next_size);
  if (status.has_value()) status::check_status_tensor(op, *status, f_hat.device());
  const int64_t H = f_hat.size(2), W = f_hat.size(3), V = codebook.size(0);
  at::Tensor tok = tokens.contiguous();
  if (const int64_t bad = first_token_out_of_range(tok, V); bad >= 0) {
    TORCH_CHECK(status.has_value(), op, ": token out of range: tokens must lie in [0, V) with V = ", V, ", got ",
                tok.const_data_ptr<int64_t>()[bad], " at flat position ", bad);
    *status->mutable_data_ptr<int>() |= status::kTokenOutOfRange;
    tok = out_of_range_as_code_zero(tok, V);
  }
  // A non-contiguous f_hat is updated through a contiguous copy, written back.
  const at::Tensor target = f_hat.contiguous();
  if (f_hat.numel() > 0) {
    const at::Tensor padded = embed_upsample_padded_f32(tok, codebook.to(at::kFloat).contiguous(), pn, H, W);
    phi_blend_padded(padded, phi_weight.to(at::kFloat).contiguous(), phi_bias.to(at::kFloat).contiguous(), ratio,
                     target, PhiSink::kAdd);
    if (!target.is_same(f_hat)) f_hat.copy_(target);
  }
  if (next_size == 0) return at::empty({0}, f_hat.options());
  return area_downsample_f32(target, next_size, /*channels_last_rows=*/false);
}

std::vector<at::Tensor> quant_encode_cpu(const at::Tensor& f, const at::Tensor& codebook,
                                         const at::Tensor& phi_weights, const at::Tensor& phi_biases,
                                         at::IntArrayRef phi_index, double ratio, at::IntArrayRef patch_nums) {
  var_fast::quant::check_encode_args(f, codebook, phi_weights, phi_biases, phi_index, patch_nums);
  const int64_t B = f.size(0), C = f.size(1), H = f.size(2), W = f.size(3);
  const int64_t S = static_cast<int64_t>(patch_nums.size());
  // Residual f_rest = f - sum of the Phi-refined code maps so far; f_hat itself is not needed for tokens.
  at::Tensor f_rest = at::empty({B, C, H, W}, f.options().dtype(at::kFloat));
  f_rest.copy_(f);
  const at::Tensor cb = codebook.to(at::kFloat).contiguous();
  const at::Tensor weights = phi_weights.to(at::kFloat).contiguous();
  const at::Tensor biases = phi_biases.to(at::kFloat).contiguous();
  const PreparedCodebook book = prepare_codebook_f32(cb);
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
      const at::Tensor padded = embed_upsample_padded_f32(tokens, cb, pn, H, W);
      phi_blend_padded(padded, weights.select(0, phi_index[si]), biases.select(0, phi_index[si]), ratio, f_rest,
                       PhiSink::kSubtract);
    }
  }
  return tokens_per_scale;
}

}  // namespace
}  // namespace var_fast::quant_cpu

TORCH_LIBRARY_IMPL(var_fast, CPU, m) {
  m.impl("quant_sampler_step", &var_fast::quant_cpu::quant_sampler_step_cpu);
  m.impl("quant_encode", &var_fast::quant_cpu::quant_encode_cpu);
}

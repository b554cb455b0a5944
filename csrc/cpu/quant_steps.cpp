// quant_sampler_step and quant_encode on CPU, composed from the helpers of quant_nearest_code.cpp,
// quant_resample.cpp and quant_phi.cpp (declared in var_fast/quant_cpu.h). All arithmetic is float32:
// f_hat must be float32; other inputs of any floating dtype are converted once.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <vector>

#include "var_fast/check.h"
#include "var_fast/quant_cpu.h"

namespace var_fast::quant_cpu {
namespace {

// Side of a square token map of `count` tokens, or -1.
int64_t square_side(int64_t count) {
  int64_t side = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(count))));
  return side * side == count ? side : -1;
}

void check_tokens_in_range(const at::Tensor& tokens, int64_t V) {
  const int64_t* t = tokens.const_data_ptr<int64_t>();
  const int64_t n = tokens.numel();
  int64_t bad = -1;
  for (int64_t i = 0; i < n && bad < 0; ++i) {
    if (t[i] < 0 || t[i] >= V) bad = i;
  }
  TORCH_CHECK(bad < 0, "quant_sampler_step: token out of range: tokens must lie in [0, V) with V = ", V,
              ", got ", (bad < 0 ? 0 : t[bad]), " at flat position ", bad);
}

void check_codebook(const at::Tensor& codebook, int64_t C, const at::Device& device, const char* op) {
  TORCH_CHECK(codebook.dim() == 2 && codebook.size(1) == C && codebook.size(0) >= 1, op,
              ": codebook must be (V, C) with V >= 1 and C = ", C, ", got shape ", codebook.sizes());
  VF_CHECK_FLOATING(codebook);
  VF_CHECK_DEVICE(codebook, device);
}

at::Tensor quant_sampler_step_cpu(const at::Tensor& tokens, const at::Tensor& codebook, const at::Tensor& f_hat,
                                  const at::Tensor& phi_weight, const at::Tensor& phi_bias, double ratio,
                                  int64_t next_size) {
  TORCH_CHECK(f_hat.dim() == 4, "quant_sampler_step: f_hat must be 4-D (B, C, H, W), got shape ", f_hat.sizes());
  TORCH_CHECK(f_hat.scalar_type() == at::kFloat, "quant_sampler_step: f_hat must be float32, got ",
              f_hat.scalar_type());
  const int64_t B = f_hat.size(0), C = f_hat.size(1), H = f_hat.size(2), W = f_hat.size(3);
  TORCH_CHECK(tokens.dim() == 2 && tokens.size(0) == B, "quant_sampler_step: tokens must be (B, pn*pn) with B = ", B,
              ", got shape ", tokens.sizes());
  TORCH_CHECK(tokens.scalar_type() == at::kLong, "quant_sampler_step: tokens must be int64, got ",
              tokens.scalar_type());
  VF_CHECK_DEVICE(tokens, f_hat.device());
  const int64_t pn = square_side(tokens.size(1));
  TORCH_CHECK(pn >= 1 && pn <= H && pn <= W, "quant_sampler_step: tokens must hold a square map pn*pn with 1 <= pn <= ",
              "min(H, W) = ", std::min(H, W), ", got ", tokens.size(1), " tokens per image");
  check_codebook(codebook, C, f_hat.device(), "quant_sampler_step");
  TORCH_CHECK(phi_weight.dim() == 4 && phi_weight.size(0) == C && phi_weight.size(1) == C && phi_weight.size(2) == 3 &&
                  phi_weight.size(3) == 3,
              "quant_sampler_step: phi_weight must be (C, C, 3, 3) with C = ", C, ", got shape ", phi_weight.sizes());
  TORCH_CHECK(phi_bias.dim() == 1 && phi_bias.size(0) == C, "quant_sampler_step: phi_bias must be (C,) with C = ", C,
              ", got shape ", phi_bias.sizes());
  VF_CHECK_FLOATING(phi_weight);
  VF_CHECK_FLOATING(phi_bias);
  VF_CHECK_DEVICE(phi_weight, f_hat.device());
  VF_CHECK_DEVICE(phi_bias, f_hat.device());
  TORCH_CHECK(next_size >= 0, "quant_sampler_step: next_size must be >= 0 (0 = last scale), got ", next_size);

  const at::Tensor tok = tokens.contiguous();
  check_tokens_in_range(tok, codebook.size(0));
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
  TORCH_CHECK(f.dim() == 4, "quant_encode: f must be 4-D (B, C, H, W), got shape ", f.sizes());
  VF_CHECK_FLOATING(f);
  const int64_t B = f.size(0), C = f.size(1), H = f.size(2), W = f.size(3);
  const int64_t S = static_cast<int64_t>(patch_nums.size());
  TORCH_CHECK(S >= 1, "quant_encode: patch_nums must not be empty");
  TORCH_CHECK(patch_nums.back() == H && patch_nums.back() == W, "quant_encode: the last patch size must equal the ",
              "feature map's H and W, got patch_nums[-1] = ", patch_nums.back(), " for f of shape ", f.sizes());
  for (int64_t si = 0; si < S; ++si) {
    TORCH_CHECK(patch_nums[si] >= 1 && patch_nums[si] <= H, "quant_encode: patch_nums must lie in [1, H = ", H,
                "], got ", patch_nums[si], " at scale ", si);
  }
  check_codebook(codebook, C, f.device(), "quant_encode");
  TORCH_CHECK(phi_weights.dim() == 5 && phi_weights.size(0) >= 1 && phi_weights.size(1) == C &&
                  phi_weights.size(2) == C && phi_weights.size(3) == 3 && phi_weights.size(4) == 3,
              "quant_encode: phi_weights must be (K, C, C, 3, 3) with K >= 1 and C = ", C, ", got shape ",
              phi_weights.sizes());
  const int64_t K = phi_weights.size(0);
  TORCH_CHECK(phi_biases.dim() == 2 && phi_biases.size(0) == K && phi_biases.size(1) == C,
              "quant_encode: phi_biases must be (K, C) = (", K, ", ", C, "), got shape ", phi_biases.sizes());
  VF_CHECK_FLOATING(phi_weights);
  VF_CHECK_FLOATING(phi_biases);
  VF_CHECK_DEVICE(phi_weights, f.device());
  VF_CHECK_DEVICE(phi_biases, f.device());
  TORCH_CHECK(static_cast<int64_t>(phi_index.size()) == S, "quant_encode: phi_index must hold one entry per scale (",
              S, "), got ", phi_index.size());
  for (int64_t si = 0; si < S; ++si) {
    TORCH_CHECK(phi_index[si] >= 0 && phi_index[si] < K, "quant_encode: phi_index must lie in [0, K = ", K, "), got ",
                phi_index[si], " at scale ", si);
  }

  // Residual f_rest = f - sum of the Phi-refined code maps so far; f_hat itself is not needed for tokens.
  at::Tensor f_rest = at::empty({B, C, H, W}, f.options().dtype(at::kFloat));
  f_rest.copy_(f);
  const at::Tensor cb = codebook.to(at::kFloat).contiguous();
  const at::Tensor weights = phi_weights.to(at::kFloat).contiguous();
  const at::Tensor biases = phi_biases.to(at::kFloat).contiguous();
  std::vector<at::Tensor> tokens_per_scale;
  tokens_per_scale.reserve(S);
  for (int64_t si = 0; si < S; ++si) {
    const int64_t pn = patch_nums[si];
    // (B*pn*pn, C) rows in (b, y, x) order = the reference's permute(0, 2, 3, 1).reshape(-1, C); at the
    // last scale (pn == H) the area average of single cells is an exact copy.
    const at::Tensor z = area_downsample_f32(f_rest, pn, /*channels_last_rows=*/true);
    const at::Tensor tokens = nearest_code_f32(z, cb).view({B, pn * pn});
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

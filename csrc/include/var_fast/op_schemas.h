// The one place where var_fast's operator schemas are declared, for the `var_fast` library
// (csrc/ops.cpp) and for the emulated kernels' `var_fast_emu` library (tests/emu). CPU implementations
// register beside their kernels in csrc/cpu/, CUDA ones in csrc/cuda/, fake (meta) ones in
// var_fast/_fake.py.
#pragma once
#include <torch/library.h>

namespace var_fast {

inline void define_ops(torch::Library& m) {
  // ---- sampling: logits (B, L, V) -> int64 tokens (B, L) ----
  // top-k keeps every logit equal to the k-th largest; top-p drops the smallest tokens whose
  // cumulative probability is <= 1 - top_p (never the top one). One draw per row from Philox
  // keyed by (seed, row_offset + b * L + l). Bad rows (NaN, +inf, all -inf) raise, or, when an int32
  // `status` of one element is given, OR flags into it (no host round trip; check_status reads them).
  m.def("sample_top_k_top_p(Tensor logits, int top_k, float top_p, int seed, int row_offset=0, Tensor(a!)? status=None) -> Tensor");
  // logits (2B, L, V): conditional half then unconditional half, mixed as (1+g)*cond - g*uncond.
  m.def("sample_cfg_top_k_top_p(Tensor logits, float guidance, int top_k, float top_p, int seed, int row_offset=0, Tensor(a!)? status=None) -> Tensor");

  // ---- bitwise sampling (Infinity): logits (N, L, 2D), D pairs (logit of bit 0, logit of bit 1) -> int64 bits (B, L, D) ----
  // x * (1/tau), then top-k (1: the larger logit; ties keep both) / top-p (drop the smaller when its probability
  // is <= 1 - top_p) on each pair, one draw per bit from Philox keyed by (seed, image_offset + b, l, d).
  // Semantics in csrc/include/var_fast/bitwise_sampling.cuh; bad pairs raise or set `status` as above.
  m.def("sample_bits(Tensor logits, float tau, int top_k=0, float top_p=0.0, int seed=0, int image_offset=0, Tensor(a!)? status=None) -> Tensor");
  // logits (2B, L, 2D): conditional half then unconditional half, mixed as cfg*c + (1-cfg)*u after 1/tau.
  m.def("sample_cfg_bits(Tensor logits, float cfg, float tau, int top_k=0, float top_p=0.0, int seed=0, int image_offset=0, Tensor(a!)? status=None) -> Tensor");

  // ---- AdaLN-modulated attention ----
  // LayerNorm without affine over the last dim, then x * (1 + scale) + shift; scale/shift (B, 1, C).
  m.def("adaln_modulate(Tensor x, Tensor scale, Tensor shift, float eps=1e-6) -> Tensor");
  // qkv (B, L, 3C) from the bias-free QKV GEMM -> q (B, H, L, c). Adds q/v biases, L2-normalises
  // q and k per head when head_scale (H,) is given (q then multiplied by head_scale), and writes
  // k, v into the caches (B, H, Lmax, c) at [offset, offset + L). With rope (2, L, c/2) float32 (cos, sin),
  // q and k are then rotated pairwise (2i, 2i+1) as Infinity's 2-D RoPE does (infinity/rope2d.py apply_rope).
  m.def("qkv_to_cache(Tensor qkv, Tensor q_bias, Tensor v_bias, Tensor? head_scale, Tensor(a!) k_cache, Tensor(b!) v_cache, int offset, Tensor? rope=None) -> Tensor");
  // q (B, H, L, c) over the first kv_len cached keys/values -> (B, L, H*c).
  m.def("cached_attention(Tensor q, Tensor k_cache, Tensor v_cache, int kv_len, float scale) -> Tensor");
  // x + gamma * y with gamma (B, 1, C).
  m.def("gated_residual(Tensor x, Tensor y, Tensor gamma) -> Tensor");
  // gated_residual then adaln_modulate on its result, in one pass: returns (out, h) with
  // out = x + gamma * y (in x's dtype) and h = LayerNorm(out) * (1 + scale) + shift. gamma, scale,
  // shift (B, 1, C); the values are those of the two ops in sequence.
  m.def("gated_residual_adaln(Tensor x, Tensor y, Tensor gamma, Tensor scale, Tensor shift, float eps=1e-6) -> (Tensor, Tensor)");
  // GELU(x + bias) with the tanh approximation (nn.GELU(approximate='tanh')); x (..., N), bias (N,).
  // x + bias is rounded to x's dtype first, as a linear layer's output would be.
  m.def("bias_gelu(Tensor x, Tensor bias) -> Tensor");

  // ---- multi-scale residual quantization ----
  // z (N, C), codebook (V, C) -> int64 (N,): argmin squared L2, lowest index on ties.
  m.def("nearest_code(Tensor z, Tensor codebook) -> Tensor");
  // (B, C, H, W) -> (B, C, size, size), F.interpolate(mode='area') semantics.
  m.def("area_downsample(Tensor x, int size) -> Tensor");
  // (B, C, h, w) -> (B, C, size, size), F.interpolate(mode='bicubic', align_corners=False) semantics.
  m.def("bicubic_upsample(Tensor x, int size) -> Tensor");
  // (1 - ratio) * h + ratio * (conv3x3(h, weight, padding=1) + bias).
  m.def("phi_blend(Tensor h, Tensor weight, Tensor bias, float ratio) -> Tensor");
  // Sampler step of one scale: tokens (B, pn*pn) -> codebook lookup -> bicubic to f_hat's size (if
  // smaller) -> Phi -> f_hat += (in place) -> returns area_downsample(f_hat, next_size), or an empty
  // tensor when next_size == 0 (last scale). Tokens outside [0, V) raise, or with `status`, set its flag
  // (and the step leaves f_hat's value unspecified).
  m.def("quant_sampler_step(Tensor tokens, Tensor codebook, Tensor(a!) f_hat, Tensor phi_weight, Tensor phi_bias, float ratio, int next_size, Tensor(b!)? status=None) -> Tensor");
  // Encoder loop: features f (B, C, H, W) -> tokens per scale [(B, pn*pn)]. phi_weights (K, C, C, 3, 3),
  // phi_biases (K, C); scale si uses Phi number phi_index[si].
  m.def("quant_encode(Tensor f, Tensor codebook, Tensor phi_weights, Tensor phi_biases, int[] phi_index, float ratio, int[] patch_nums) -> Tensor[]");

  // ---- device-side errors ----
  // Raises the error of the flags in status (sampling and quant_sampler_step); vocab_size for the message.
  m.def("check_status(Tensor status, int vocab_size) -> ()");
}

}  // namespace var_fast

// Torch-facing helpers of the quantization launchers on the kernel device (csrc/cuda/quant_*.cpp),
// shared between them: the encoder (quant_steps.cpp) composes nearest_code, the area downsample and the
// Phi of a code map. Tensors are on the kernel device (CUDA, or the CPU in the emulated build) and
// already checked by the op that calls them.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace var_fast::quant_cuda {

// float32 codebook prepared once for nearest_code_f32.
struct PreparedCodebook {
  at::Tensor codes;          // (V, C) contiguous float32
  at::Tensor norms;          // (V,) |e|^2 from the same ATen reduction as the reference
  at::Tensor sqrt_norm_max;  // () sqrt(max |e|^2) on the device (NaN/inf when a norm is)
};
PreparedCodebook prepare_codebook_f32(const at::Tensor& codebook);

// z (N, C) contiguous float32 -> int64 (N,): torch.argmin of the reference formula, token for token.
// Synchronizes with the device once (to know whether a row needs the reference fallback).
at::Tensor nearest_code_f32(const at::Tensor& z, const PreparedCodebook& book);

// x (B, C, H, W) float32, any strides -> area average (B, C, size, size), or (B*size*size, C) rows.
at::Tensor area_downsample_f32(const at::Tensor& x, int64_t size, bool channels_last_rows);

// weight (C, C, 3, 3) -> weight_t (C, 9, Cp) float32 as phi_tile_kernel reads it.
at::Tensor phi_weight_layout(const at::Tensor& weight);

// target (B, C, H, W) contiguous float32 += sign * Phi(code map of tokens (B, pn*pn), upsampled), codes
// (V, C) contiguous float32. Tokens outside [0, V) read code 0 and set status::kTokenOutOfRange in
// `status` (int32, one element) when given; without it the caller has checked the tokens.
void embed_phi_accumulate(const at::Tensor& tokens, const at::Tensor& codes, int64_t pn, const at::Tensor& weight_t,
                          const at::Tensor& bias, double ratio, const at::Tensor& target, float sign,
                          int* status = nullptr);

}  // namespace var_fast::quant_cuda

// Input checks of gated_residual_adaln and bias_gelu, shared by the CPU and CUDA launchers (host only).
// `expected` is the device every tensor must be on: the CPU, or the CUDA device of x.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>

#include "var_fast/adaln_checks.h"
#include "var_fast/check.h"

namespace var_fast::residual_adaln_checks {

// The residual half is gated_residual's contract, the modulation half adaln_modulate's (on x's shape).
inline void check_gated_residual_adaln_inputs(const at::Tensor& x, const at::Tensor& y, const at::Tensor& gamma,
                                              const at::Tensor& scale, const at::Tensor& shift, double eps,
                                              const at::Device& expected) {
  adaln_checks::check_gated_residual_inputs(x, y, gamma, expected);
  adaln_checks::check_adaln_modulate_inputs(x, scale, shift, eps, expected);
}

// x (..., N) and bias (N,), one dtype and device.
inline void check_bias_gelu_inputs(const at::Tensor& x, const at::Tensor& bias, const at::Device& expected) {
  VF_CHECK_DEVICE(x, expected);
  VF_CHECK_DEVICE(bias, expected);
  VF_CHECK_FLOATING(x);
  VF_CHECK_SAME_DTYPE(bias, x);
  TORCH_CHECK(x.dim() >= 1, "x must have at least 1 dim (..., N), got a scalar");
  VF_CHECK_DIM(bias, 1);
  TORCH_CHECK(bias.size(0) == x.size(-1), "bias must have shape (N,) = (", x.size(-1), ",) to match x's last dim, got ",
              bias.sizes());
}

}  // namespace var_fast::residual_adaln_checks

// Input checks of adaln_modulate and gated_residual, shared by the CPU and CUDA launchers (host only).
// `expected` is the device every tensor must be on: the CPU, or the CUDA device of x.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>

#include "var_fast/check.h"

namespace var_fast::adaln_checks {

inline void check_adaln_modulate_inputs(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift,
                                        double eps, const at::Device& expected) {
  VF_CHECK_DEVICE(x, expected);
  VF_CHECK_DEVICE(scale, expected);
  VF_CHECK_DEVICE(shift, expected);
  VF_CHECK_FLOATING(x);
  VF_CHECK_SAME_DTYPE(scale, x);
  VF_CHECK_SAME_DTYPE(shift, x);
  VF_CHECK_DIM(x, 3);
  const int64_t B = x.size(0), C = x.size(2);
  TORCH_CHECK(scale.dim() == 3 && scale.size(0) == B && scale.size(1) == 1 && scale.size(2) == C,
              "scale must have shape (B, 1, C) = (", B, ", 1, ", C, ") to match x, got ", scale.sizes());
  TORCH_CHECK(shift.dim() == 3 && shift.size(0) == B && shift.size(1) == 1 && shift.size(2) == C,
              "shift must have shape (B, 1, C) = (", B, ", 1, ", C, ") to match x, got ", shift.sizes());
  TORCH_CHECK(eps >= 0, "eps must be >= 0, got ", eps);
}

inline void check_gated_residual_inputs(const at::Tensor& x, const at::Tensor& y, const at::Tensor& gamma,
                                        const at::Device& expected) {
  VF_CHECK_DEVICE(x, expected);
  VF_CHECK_DEVICE(y, expected);
  VF_CHECK_DEVICE(gamma, expected);
  VF_CHECK_FLOATING(x);
  VF_CHECK_SAME_DTYPE(y, x);
  VF_CHECK_SAME_DTYPE(gamma, x);
  VF_CHECK_DIM(x, 3);
  TORCH_CHECK(y.sizes() == x.sizes(), "y must have the shape of x ", x.sizes(), ", got ", y.sizes());
  const int64_t B = x.size(0), C = x.size(2);
  TORCH_CHECK(gamma.dim() == 3 && gamma.size(0) == B && gamma.size(1) == 1 && gamma.size(2) == C,
              "gamma must have shape (B, 1, C) = (", B, ", 1, ", C, ") to match x, got ", gamma.sizes());
}

}  // namespace var_fast::adaln_checks

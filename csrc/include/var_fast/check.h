// Input checks shared by every launcher: each names the argument and what was expected.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#define VF_CHECK_DEVICE(x, dev) \
  TORCH_CHECK((x).device() == (dev), #x " must be on ", (dev), ", got ", (x).device())
#define VF_CHECK_FLOATING(x)                                                                       \
  TORCH_CHECK((x).scalar_type() == at::kFloat || (x).scalar_type() == at::kHalf ||                 \
                  (x).scalar_type() == at::kBFloat16,                                              \
              #x " must be float32, float16 or bfloat16, got ", (x).scalar_type())
#define VF_CHECK_DIM(x, n) TORCH_CHECK((x).dim() == (n), #x " must be ", (n), "-D, got shape ", (x).sizes())
#define VF_CHECK_SAME_DTYPE(x, y) \
  TORCH_CHECK((x).scalar_type() == (y).scalar_type(), #x " and " #y " must have the same dtype, got ", \
              (x).scalar_type(), " and ", (y).scalar_type())

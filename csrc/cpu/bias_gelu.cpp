// bias_gelu on CPU: GELU_tanh(x + bias), unfused through ATen (x + bias rounded to x's dtype, then
// at::gelu(approximate="tanh")): bit for bit nn.GELU(approximate='tanh') on fc1's output, the reference
// of the CUDA kernel. On the CPU a launch costs nothing, so there is nothing to fuse.
#include <ATen/core/Tensor.h>
#include <ATen/ops/add.h>
#include <ATen/ops/gelu.h>
#include <torch/library.h>

#include "var_fast/residual_adaln_checks.h"

namespace var_fast {
namespace {

at::Tensor bias_gelu_cpu(const at::Tensor& x, const at::Tensor& bias) {
  residual_adaln_checks::check_bias_gelu_inputs(x, bias, at::Device(at::kCPU));
  return at::gelu(at::add(x.contiguous(), bias), "tanh");  // contiguous, as the CUDA op and the fake kernel
}

}  // namespace
}  // namespace var_fast

TORCH_LIBRARY_IMPL(var_fast, CPU, m) { m.impl("bias_gelu", &var_fast::bias_gelu_cpu); }

// Device code of bias_gelu (launcher: csrc/cuda/bias_gelu.cpp; launch plan: var_fast/bias_gelu_launch.h;
// kernel translation unit: csrc/cuda/bias_gelu_kernels.cu).
//   bias_gelu_kernel - out = GELU_tanh(x + bias) over packs of VEC elements: the epilogue of VAR's fc1
//                      (nn.GELU(approximate='tanh')) after a bias-free GEMM, one launch instead of the
//                      bias add and the GELU. x + bias is rounded to T first, as fc1's output would be.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "var_fast/adaln.cuh"
#include "var_fast/bias_gelu_launch.h"

namespace var_fast {
namespace bias_gelu {

// PyTorch's tanh approximation, in float32: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
__device__ __forceinline__ float gelu_tanh(float x) {
  constexpr float kBeta = 0.7978845608028654f;  // sqrt(2 / pi)
  constexpr float kKappa = 0.044715f;
  const float x_cube = x * x * x;
  const float inner = kBeta * (x + kKappa * x_cube);
  return 0.5f * x * (1.f + tanhf(inner));
}

// Pack i holds elements [i * VEC, (i + 1) * VEC) of the flat tensors; VEC divides N.
template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads)
    bias_gelu_kernel(const T* __restrict__ x, const T* __restrict__ bias, T* __restrict__ out, int64_t packs,
                     int64_t packs_per_row) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < packs;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = (i % packs_per_row) * VEC;
    float xv[VEC], bv[VEC], o[VEC];
    adaln::load_floats<T, VEC>(x + i * VEC, xv);
    adaln::load_floats<T, VEC>(bias + c, bv);
#pragma unroll
    for (int k = 0; k < VEC; ++k) o[k] = gelu_tanh(static_cast<float>(static_cast<T>(xv[k] + bv[k])));
    adaln::store_floats<T, VEC>(out + i * VEC, o);
  }
}

}  // namespace bias_gelu
}  // namespace var_fast

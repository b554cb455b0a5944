// float32 operations rounded once each, the same on the host and on the device: nvcc would otherwise
// contract a product and a following add into one FMA (the host builds use -ffp-contract=off), and host
// and device results would differ in the last bit. Used where CPU and CUDA kernels must agree bit for
// bit (sampling, bitwise sampling, the BSQ update's interpolation).
#pragma once

// Always inlined on the host: a caller compiled for the FMA instruction set (a target attribute, as the
// BSQ update's FMA variant) then gets these inline, not as calls.
#if defined(__CUDACC__)
#define VAR_FAST_ROUNDED_OP __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define VAR_FAST_ROUNDED_OP inline __attribute__((always_inline))
#else
#define VAR_FAST_ROUNDED_OP inline
#endif

namespace var_fast::rounding {

VAR_FAST_ROUNDED_OP float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

VAR_FAST_ROUNDED_OP float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

VAR_FAST_ROUNDED_OP float sub_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}

VAR_FAST_ROUNDED_OP float div_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

}  // namespace var_fast::rounding

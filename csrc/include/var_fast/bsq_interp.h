// The float32 arithmetic of torch's CPU trilinear interpolation (F.interpolate(mode="trilinear",
// align_corners=False) of a (B, C, 1, h, w) tensor to (1, H, W)), operation for operation, the same
// function on the host (csrc/cpu/bsq_scale_update.cpp) and on the device (var_fast/bsq.cuh), for the
// BSQ per-scale update. Measured against torch 2.14 on x86 (tests/test_bsq_scale_update.py):
//
//  * source index and weights per axis: ATen's compute_source_index_and_lambda in float32 (same size:
//    index o, weights 1 and 0); ATen's kernels are compiled with -mfma for AVX2/AVX512, and there the
//    compiler fuses scale * (o + 0.5) - 0.5 into one FMA (not in the DEFAULT build).
//  * C > 3 channels in channels-last layout (the sampler's codes and summed codes): ATen's
//    cpu_upsample_linear_channels_last. Weights w_yx = h_y * w_x (the depth weight is 1 and 0).
//    Channels [0, C - C % 8): its vectorised loop, t00*w00 + (t01*w01 + (t10*w10 + t11*w11)) with each
//    product fused into the sum on its right; the rest: its scalar tail, ((t00*w00 + t01*w01) + t10*w10)
//    + t11*w11, fused as fma(t00, w00, t01*w01) then fma(t10, w10, .), fma(t11, w11, .). The 8 is the
//    loop's width measured on AVX2 and AVX512 machines alike.
//  * C <= 3: ATen's separable upsample_generic_Nd kernel, (t00*w0 + t01*w1)*h0 + (t10*w0 + t11*w1)*h1
//    with each first product fused into its sum.
//  * The zero-weight depth terms only add signed zeros: left out (value-identical, not sign-identical
//    for an exact 0 result).
// Without FMA (torch's DEFAULT CPU capability), the same expressions with every product rounded.
#pragma once
#include <cmath>
#include <cstdint>

#include "var_fast/float_rounding.h"

// Always inlined: the CPU op's FMA variant is compiled for the FMA instruction set (target attribute), and
// only code inlined into it gets the instruction instead of a call to libm's fma.
#if defined(__CUDACC__)
#define VF_BSQ_INLINE __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define VF_BSQ_INLINE inline __attribute__((always_inline))
#else
#define VF_BSQ_INLINE inline
#endif

namespace var_fast::bsq {

constexpr int kTorchVectorWidth = 8;  // channels per step of ATen's vectorised channels-last loop
constexpr int64_t kGenericMaxChannels = 3;  // C <= 3: ATen's generic (separable) kernel

// Which of torch's CPU kernels' arithmetic to reproduce: fused multiply-adds or not (the host's ATen
// CPU capability decides; see bsq_host.h).
struct Formula {
  bool fma = true;
};

using rounding::add_rn;
using rounding::div_rn;
using rounding::mul_rn;
using rounding::sub_rn;

// a * b + c, fused (one rounding) or not (two).
VF_BSQ_INLINE float mul_add(float a, float b, float c, bool fused) {
#if defined(__CUDA_ARCH__)
  return fused ? __fmaf_rn(a, b, c) : __fadd_rn(__fmul_rn(a, b), c);
#else
  return fused ? std::fma(a, b, c) : a * b + c;
#endif
}

// One axis of the interpolation: output index o of `out` reads source indices i0, i1 with weights l0, l1.
struct Axis {
  int64_t i0, i1;
  float l0, l1;
};

VF_BSQ_INLINE Axis axis(int64_t in, int64_t out, int64_t o, bool fused) {
  if (in == out) return Axis{o, o, 1.0f, 0.0f};
  const float scale = div_rn(static_cast<float>(in), static_cast<float>(out));
  float src = mul_add(scale, add_rn(static_cast<float>(o), 0.5f), -0.5f, fused);
  if (src < 0.0f) src = 0.0f;
  int64_t i0 = static_cast<int64_t>(floorf(src));
  if (i0 > in - 1) i0 = in - 1;
  float l1 = sub_rn(src, static_cast<float>(i0));
  l1 = l1 < 0.0f ? 0.0f : (l1 > 1.0f ? 1.0f : l1);
  return Axis{i0, i0 + (i0 < in - 1 ? 1 : 0), sub_rn(1.0f, l1), l1};
}

// The 2 x 2 weights of the channels-last kernel: w[y][x] = h_y * w_x.
struct Weights {
  float w00, w01, w10, w11;
};

VF_BSQ_INLINE Weights weights(const Axis& ay, const Axis& ax) {
  return Weights{mul_rn(ay.l0, ax.l0), mul_rn(ay.l0, ax.l1), mul_rn(ay.l1, ax.l0), mul_rn(ay.l1, ax.l1)};
}

// The interpolated value of channel c of C from the four source values t_yx (y: ay.i0 / ay.i1, x: ax.i0 /
// ax.i1) as torch's CPU kernel for C channels computes it.
VF_BSQ_INLINE float combine(float t00, float t01, float t10, float t11, const Axis& ay, const Axis& ax,
                                   const Weights& w, int64_t c, int64_t C, bool fused) {
  if (C <= kGenericMaxChannels) {
    const float a = mul_add(t00, ax.l0, mul_rn(t01, ax.l1), fused);
    const float b = mul_add(t10, ax.l0, mul_rn(t11, ax.l1), fused);
    return mul_add(a, ay.l0, mul_rn(b, ay.l1), fused);
  }
  if (c < C - C % kTorchVectorWidth) {  // vectorised loop: sums nested to the right
    return mul_add(t00, w.w00, mul_add(t01, w.w01, mul_add(t10, w.w10, mul_rn(t11, w.w11), fused), fused), fused);
  }
  // scalar tail: sums from the left
  return mul_add(t11, w.w11, mul_add(t10, w.w10, mul_add(t00, w.w00, mul_rn(t01, w.w01), fused), fused), fused);
}

}  // namespace var_fast::bsq

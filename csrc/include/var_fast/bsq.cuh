// Device code of bsq_scale_update (launch plan: var_fast/bsq_launch.h; run function:
// csrc/cuda/bsq_kernels.cu; torch-facing launcher: csrc/cuda/bsq_scale_update.cpp). The arithmetic is the
// host's (var_fast/bsq_interp.h: torch's CPU trilinear interpolation, explicit roundings and FMAs).
//   bsq_update_kernel<channels_fastest> - one thread per element of summed codes: the interpolated code of
//                                         its channel from 4 bits, added in place; also range-checks bits.
//   bsq_next_kernel                     - one thread per element of the next input: summed codes
//                                         interpolated to the next VAE grid, written as (B, L, F) tokens.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "var_fast/bsq_interp.h"
#include "var_fast/bsq_launch.h"
#include "var_fast/status_flags.h"  // status::kBitOutOfRange

namespace var_fast::bsq_cuda {

// The code of channel c at VAE cell (y, x): +code for a 1 bit, -code otherwise (pixel_shuffle(2) of the
// (h, w, 4d) bits with patchify).
__device__ __forceinline__ float code_at(const BsqUpdateParams& p, int64_t b, int64_t y, int64_t x, int64_t c) {
  const int64_t i = p.patchify ? ((b * p.h + y / 2) * p.w + x / 2) * p.D + c * 4 + (y % 2) * 2 + x % 2
                               : ((b * p.h + y) * p.w + x) * p.D + c;
  return p.bits[i] == 1 ? p.code : -p.code;
}

template <bool channels_fastest>
__global__ void __launch_bounds__(kBsqThreads) bsq_update_kernel(BsqUpdateParams p) {
  const int64_t total = p.B * p.d * p.H * p.W, nbits = p.B * p.h * p.w * p.D;
  const int64_t work = total > nbits ? total : nbits;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < work;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if (p.status != nullptr && i < nbits && p.bits[i] != 0 && p.bits[i] != 1) atomicOr(p.status, status::kBitOutOfRange);
    if (i >= total) continue;
    int64_t b, c, Y, X, rest = i;
    if (channels_fastest) {
      c = rest % p.d; rest /= p.d;
      X = rest % p.W; rest /= p.W;
      Y = rest % p.H; b = rest / p.H;
    } else {
      X = rest % p.W; rest /= p.W;
      Y = rest % p.H; rest /= p.H;
      c = rest % p.d; b = rest / p.d;
    }
    const bsq::Axis y = bsq::axis(p.hv, p.H, Y, p.fused), x = bsq::axis(p.wv, p.W, X, p.fused);
    const float v = bsq::combine(code_at(p, b, y.i0, x.i0, c), code_at(p, b, y.i0, x.i1, c),
                                 code_at(p, b, y.i1, x.i0, c), code_at(p, b, y.i1, x.i1, c), y, x, bsq::weights(y, x),
                                 c, p.d, p.fused);
    float* out = p.summed + b * p.ss.b + c * p.ss.c + Y * p.ss.y + X * p.ss.x;
    *out = bsq::add_rn(*out, v);
  }
}

__global__ void __launch_bounds__(kBsqThreads) bsq_next_kernel(BsqNextParams p) {
  const int64_t total = p.B * p.nh * p.nw * p.d;
  const int64_t L = p.patchify ? (p.nh / 2) * (p.nw / 2) : p.nh * p.nw, F = p.patchify ? 4 * p.d : p.d;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t rest = i;
    const int64_t c = rest % p.d; rest /= p.d;
    const int64_t X = rest % p.nw; rest /= p.nw;
    const int64_t Y = rest % p.nh;
    const int64_t b = rest / p.nh;
    const bsq::Axis y = bsq::axis(p.H, p.nh, Y, p.fused), x = bsq::axis(p.W, p.nw, X, p.fused);
    const float* src = p.summed + b * p.ss.b + c * p.ss.c;
    const float t00 = src[y.i0 * p.ss.y + x.i0 * p.ss.x], t01 = src[y.i0 * p.ss.y + x.i1 * p.ss.x];
    const float t10 = src[y.i1 * p.ss.y + x.i0 * p.ss.x], t11 = src[y.i1 * p.ss.y + x.i1 * p.ss.x];
    const int64_t token = p.patchify ? (Y / 2) * (p.nw / 2) + X / 2 : Y * p.nw + X;
    const int64_t f = p.patchify ? c * 4 + (Y % 2) * 2 + X % 2 : c;
    p.next[(b * L + token) * F + f] = bsq::combine(t00, t01, t10, t11, y, x, bsq::weights(y, x), c, p.d, p.fused);
  }
}

}  // namespace var_fast::bsq_cuda

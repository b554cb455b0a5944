// Device code of the multi-scale residual quantization ops (launch plans: var_fast/quant_launch.h; run
// functions: csrc/cuda/quant_kernels.cu; torch-facing launchers: csrc/cuda/quant_*.cpp).
//   nearest_code_partial_kernel - 64 rows x 64 codes per tile, 4 x 4 per thread, float32 FMA chain over
//                                 the channels, fused running arg-min; the (N, V) matrix is never written.
//                                 Codes are split across grid.y; each split leaves a (best, index, second).
//   nearest_code_merge_kernel   - merges the splits of a row and certifies it (var_fast/quant_cpu.h).
//   nearest_code_refine_kernel  - one warp per uncertified row: exact (double) distances and bounds.
//   area_kernel / bicubic_kernel - F.interpolate 'area' and 'bicubic' (align_corners=False), any strides.
//   phi_tile_kernel             - Phi: a tile of rows of the input (code-map lookup + bicubic, or a dense
//                                 tensor) staged in shared memory with its zero halo, then the 3x3 conv,
//                                 bias and blend, stored or added to/subtracted from a float32 target.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "var_fast/quant_cpu.h"     // index/weight math and the certification bounds (host + device)
#include "var_fast/quant_launch.h"  // tile sizes, Strides4
#include "var_fast/status_flags.h"  // status::kTokenOutOfRange

namespace var_fast::quant_cuda {

// ---- nearest_code ------------------------------------------------------------------------------------
// Running arg-min of one row: best distance, its index, runner-up distance.
struct Top2 {
  float best;
  float second;
  int32_t index;
};

__device__ __forceinline__ Top2 top2_empty() { return Top2{__int_as_float(0x7f800000), __int_as_float(0x7f800000), 0x7fffffff}; }

// Codes arrive in increasing index order per thread: a strictly smaller distance replaces the best, so a
// tie keeps the lowest index (and lands in `second`, which makes the row uncertain). NaN never enters.
__device__ __forceinline__ void top2_push(Top2& s, float d, int32_t v) {
  if (d < s.best) {
    s.second = s.best;
    s.best = d;
    s.index = v;
  } else if (d < s.second) {
    s.second = d;
  }
}

// (best, index) compare lexicographically: equal distances keep the lower index.
__device__ __forceinline__ Top2 top2_merge(const Top2& a, const Top2& b) {
  const bool a_wins = a.best < b.best || (a.best == b.best && a.index < b.index);
  const Top2& w = a_wins ? a : b;
  const Top2& l = a_wins ? b : a;
  return Top2{w.best, fminf(w.second, l.best), w.index};
}

__device__ __forceinline__ Top2 top2_shfl_xor(const Top2& s, int offset) {
  return Top2{__shfl_xor_sync(0xffffffffu, s.best, offset), __shfl_xor_sync(0xffffffffu, s.second, offset),
              __shfl_xor_sync(0xffffffffu, s.index, offset)};
}

// z (N, C), codes (V, C) float32 row-major; zz (N,), ee (V,) the reference's |z|^2, |e|^2.
// grid (ceil(N / 64), splits); split s scans codes [s * codes_per_split, ...). Writes part_* [s][row].
static __global__ void __launch_bounds__(kNcThreads)
    nearest_code_partial_kernel(const float* __restrict__ z, const float* __restrict__ codes,
                                const float* __restrict__ zz, const float* __restrict__ ee, int64_t N, int64_t V,
                                int64_t C, int64_t codes_per_split, float* __restrict__ part_best,
                                float* __restrict__ part_second, int32_t* __restrict__ part_index) {
  __shared__ __align__(16) float zs[kNcK][kNcRows + kNcPad];
  __shared__ __align__(16) float es[kNcK][kNcCodes + kNcPad];
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kNcRows;
  const int64_t v_begin = static_cast<int64_t>(blockIdx.y) * codes_per_split;
  const int64_t v_end = v_begin + codes_per_split < V ? v_begin + codes_per_split : V;

  // This thread's rows are row0 + ty * 4 + i, its codes v0 + tx * 4 + j (i, j < 4).
  Top2 state[4];
  float row_norm[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    state[i] = top2_empty();
    const int64_t row = row0 + ty * 4 + i;
    row_norm[i] = row < N ? zz[row] : 0.0f;
  }

  for (int64_t v0 = v_begin; v0 < v_end; v0 += kNcCodes) {
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;
    }
    for (int64_t k0 = 0; k0 < C; k0 += kNcK) {
      // 64 x 16 values of z and of the codes: 4 per thread; out-of-range entries are 0 (adds nothing).
#pragma unroll
      for (int t = 0; t < 4; ++t) {
        const int e = tid + kNcThreads * t, r = e / kNcK, kk = e % kNcK;
        const int64_t k = k0 + kk, row = row0 + r, code = v0 + r;
        zs[kk][r] = (row < N && k < C) ? z[row * C + k] : 0.0f;
        es[kk][r] = (code < v_end && k < C) ? codes[code * C + k] : 0.0f;
      }
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < kNcK; ++kk) {
        const float4 a = *reinterpret_cast<const float4*>(&zs[kk][ty * 4]);
        const float4 b = *reinterpret_cast<const float4*>(&es[kk][tx * 4]);
        const float av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
#pragma unroll
          for (int j = 0; j < 4; ++j) acc[i][j] = __fmaf_rn(av[i], bv[j], acc[i][j]);  // channel-order chain
        }
      }
      __syncthreads();
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t code = v0 + tx * 4 + j;
      if (code < v_end) {
        const float code_norm = ee[code];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          // fl(fl(|z|^2 + |e|^2) - 2 p), rounded as the reference's broadcast add then addmm epilogue
          const float b = __fadd_rn(row_norm[i], code_norm);
          top2_push(state[i], __fmaf_rn(-2.0f, acc[i][j], b), static_cast<int32_t>(code));
        }
      }
    }
  }
  // The 16 threads sharing rows (same ty) are 16 consecutive lanes of one warp.
#pragma unroll
  for (int i = 0; i < 4; ++i) {
#pragma unroll
    for (int offset = 8; offset > 0; offset >>= 1) state[i] = top2_merge(state[i], top2_shfl_xor(state[i], offset));
    const int64_t row = row0 + ty * 4 + i;
    if (tx == 0 && row < N) {
      const int64_t at = static_cast<int64_t>(blockIdx.y) * N + row;
      part_best[at] = state[i].best;
      part_second[at] = state[i].second;
      part_index[at] = state[i].index;
    }
  }
}

static __global__ void nearest_code_merge_kernel(const float* __restrict__ part_best, const float* __restrict__ part_second,
                                          const int32_t* __restrict__ part_index, int64_t splits, int64_t N,
                                          int64_t V, int64_t C, const float* __restrict__ zz,
                                          const float* __restrict__ sqrt_ee_max, int64_t* __restrict__ tokens,
                                          bool* __restrict__ uncertain) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (row >= N) return;
  Top2 s = Top2{part_best[row], part_second[row], part_index[row]};
  for (int64_t sp = 1; sp < splits; ++sp) {
    const int64_t at = sp * N + row;
    s = top2_merge(s, Top2{part_best[at], part_second[at], part_index[at]});
  }
  tokens[row] = (s.index >= 0 && s.index < V) ? s.index : 0;
  uncertain[row] = !var_fast::quant::nearest_code_certain(s.best, s.second, zz[row], *sqrt_ee_max, C);
}

// Smallest upper bound (with its index, lowest on ties) and the two smallest lower bounds.
struct ExactState {
  double upper;
  int64_t upper_index;
  double lower1;
  int64_t lower1_index;
  double lower2;
};

__device__ __forceinline__ ExactState exact_merge(const ExactState& a, const ExactState& b) {
  ExactState r;
  const bool a_up = a.upper < b.upper || (a.upper == b.upper && a.upper_index < b.upper_index);
  r.upper = a_up ? a.upper : b.upper;
  r.upper_index = a_up ? a.upper_index : b.upper_index;
  const bool a_low = a.lower1 < b.lower1 || (a.lower1 == b.lower1 && a.lower1_index < b.lower1_index);
  r.lower1 = a_low ? a.lower1 : b.lower1;
  r.lower1_index = a_low ? a.lower1_index : b.lower1_index;
  r.lower2 = fmin(fmin(a.lower2, b.lower2), a_low ? b.lower1 : a.lower1);
  return r;
}

// One warp per row; rows certified by the merge kernel return at once. For the others: exact distances
// d = b_v - 2 z.e_v (double: float products are exact) with per-code bounds on the reference's rounding;
// a code whose interval lies strictly below all others is the reference's argmin.
static __global__ void nearest_code_refine_kernel(const float* __restrict__ z, const float* __restrict__ codes,
                                           const float* __restrict__ zz, const float* __restrict__ ee, int64_t N,
                                           int64_t V, int64_t C, int64_t* __restrict__ tokens,
                                           bool* __restrict__ uncertain) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarpSize;
  if (row >= N || !uncertain[row]) return;
  const double inf = __longlong_as_double(0x7ff0000000000000LL);
  ExactState s{inf, -1, inf, -1, inf};
  bool finite = true;
  const float* zr = z + row * C;
  for (int64_t v = lane; v < V; v += kWarpSize) {
    const float* e = codes + v * C;
    double dot = 0.0, abs_dot = 0.0;
    for (int64_t k = 0; k < C; ++k) {
      const double product = static_cast<double>(zr[k]) * static_cast<double>(e[k]);
      dot += product;
      abs_dot += fabs(product);
    }
    const double d = static_cast<double>(__fadd_rn(zz[row], ee[v])) - 2.0 * dot;
    const double bound = var_fast::quant::nearest_code_exact_bound(d, abs_dot, C);
    finite = finite && var_fast::quant::is_finite_value(d) && var_fast::quant::is_finite_value(bound);
    s = exact_merge(s, ExactState{d + bound, v, d - bound, v, inf});
  }
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) {
    ExactState o;
    o.upper = __shfl_xor_sync(0xffffffffu, s.upper, offset);
    o.upper_index = __shfl_xor_sync(0xffffffffu, s.upper_index, offset);
    o.lower1 = __shfl_xor_sync(0xffffffffu, s.lower1, offset);
    o.lower1_index = __shfl_xor_sync(0xffffffffu, s.lower1_index, offset);
    o.lower2 = __shfl_xor_sync(0xffffffffu, s.lower2, offset);
    s = exact_merge(s, o);
  }
  finite = __all_sync(0xffffffffu, finite);
  // Every lane read uncertain[row] above; shuffles and votes do not order memory, __syncwarp does.
  __syncwarp();
  if (lane == 0 && finite && s.upper_index >= 0) {
    const double other_lower = s.lower1_index == s.upper_index ? s.lower2 : s.lower1;
    if (other_lower > s.upper) {
      tokens[row] = s.upper_index;
      uncertain[row] = false;
    }
  }
}

// ---- area / bicubic -----------------------------------------------------------------------------------
// One thread per output element (b, c, oy, ox), flattened in the output's own order given by `order`
// sizes (so that consecutive threads write consecutive addresses): out_layout_nhwc selects c fastest.
template <typename in_t, typename out_t>
__global__ void area_kernel(const in_t* __restrict__ x, Strides4 xs, int64_t B, int64_t C, int64_t H, int64_t W,
                            int64_t size, out_t* __restrict__ out, Strides4 os, bool channels_fastest) {
  const int64_t total = B * C * size * size;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t b, c, oy, ox, rest = i;
    if (channels_fastest) {
      c = rest % C; rest /= C;
      ox = rest % size; rest /= size;
      oy = rest % size; b = rest / size;
    } else {
      ox = rest % size; rest /= size;
      oy = rest % size; rest /= size;
      c = rest % C; b = rest / C;
    }
    const int64_t y0 = var_fast::quant::area_begin(oy, size, H), y1 = var_fast::quant::area_end(oy, size, H);
    const int64_t x0 = var_fast::quant::area_begin(ox, size, W), x1 = var_fast::quant::area_end(ox, size, W);
    const in_t* src = x + b * xs.b + c * xs.c;
    float sum = 0.0f;
    for (int64_t iy = y0; iy < y1; ++iy) {
      for (int64_t ix = x0; ix < x1; ++ix) sum = __fadd_rn(sum, static_cast<float>(src[iy * xs.y + ix * xs.x]));
    }
    // the sum divided by kh then by kw, as ATen
    const float avg = __fdiv_rn(__fdiv_rn(sum, static_cast<float>(y1 - y0)), static_cast<float>(x1 - x0));
    out[b * os.b + c * os.c + oy * os.y + ox * os.x] = static_cast<out_t>(avg);
  }
}

template <typename in_t, typename out_t>
__global__ void bicubic_kernel(const in_t* __restrict__ x, Strides4 xs, int64_t B, int64_t C, int64_t h, int64_t w,
                               int64_t size, out_t* __restrict__ out) {
  const int64_t total = B * C * size * size;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t ox = i % size, oy = (i / size) % size, plane = i / (size * size);
    const int64_t b = plane / C, c = plane % C;
    const in_t* src = x + b * xs.b + c * xs.c;
    const var_fast::quant::CubicTaps ty = var_fast::quant::cubic_taps(oy, h, size);
    const var_fast::quant::CubicTaps tx = var_fast::quant::cubic_taps(ox, w, size);
    float acc = 0.0f;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const in_t* row = src + ty.index[j] * xs.y;
      float r = static_cast<float>(row[tx.index[0] * xs.x]) * tx.weight[0];
#pragma unroll
      for (int k = 1; k < 4; ++k) r += static_cast<float>(row[tx.index[k] * xs.x]) * tx.weight[k];
      acc = j == 0 ? r * ty.weight[0] : acc + r * ty.weight[j];
    }
    out[i] = static_cast<out_t>(acc);
  }
}

// ---- Phi ----------------------------------------------------------------------------------------------
// h(b, c, y, x) of a dense (B, C, H, W) tensor of any strides.
template <typename scalar_t>
struct DenseSource {
  static constexpr bool kChannelFastest = false;  // neighbouring threads read neighbouring columns
  const scalar_t* x;
  Strides4 s;
  __device__ __forceinline__ float operator()(int64_t b, int64_t c, int64_t y, int64_t xx) const {
    return static_cast<float>(x[b * s.b + c * s.c + y * s.y + xx * s.x]);
  }
};

// h(b, c, y, x) = the code map of tokens (B, pn*pn), bicubic-upsampled to (H, W) unless pn == H == W.
// A token outside [0, V) reads code 0 (memory-safe) and ORs kTokenOutOfRange into *status (if not null).
struct EmbedSource {
  static constexpr bool kChannelFastest = true;  // neighbouring threads read neighbouring floats of a code
  const int64_t* tokens;
  const float* codes;  // (V, C)
  int64_t V, C, pn, H, W;
  int* status;
  __device__ __forceinline__ const float* code(int64_t token) const {
    if (token >= 0 && token < V) return codes + token * C;
    if (status != nullptr) atomicOr(status, status::kTokenOutOfRange);
    return codes;
  }
  __device__ __forceinline__ float operator()(int64_t b, int64_t c, int64_t y, int64_t x) const {
    const int64_t* tok = tokens + b * pn * pn;
    if (pn == H && pn == W) return code(tok[y * pn + x])[c];
    const var_fast::quant::CubicTaps ty = var_fast::quant::cubic_taps(y, pn, H);
    const var_fast::quant::CubicTaps tx = var_fast::quant::cubic_taps(x, pn, W);
    float acc = 0.0f;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t* row = tok + ty.index[j] * pn;
      float r = code(row[tx.index[0]])[c] * tx.weight[0];
#pragma unroll
      for (int k = 1; k < 4; ++k) r += code(row[tx.index[k]])[c] * tx.weight[k];
      acc = j == 0 ? r * ty.weight[0] : acc + r * ty.weight[j];
    }
    return acc;
  }
};

template <typename out_t>
struct StoreSink {  // out (B, C, H, W) contiguous
  out_t* out;
  __device__ __forceinline__ void operator()(int64_t index, float phi) const { out[index] = static_cast<out_t>(phi); }
};

struct AccumulateSink {  // target (B, C, H, W) contiguous float32: += sign * phi
  float* target;
  float sign;
  __device__ __forceinline__ void operator()(int64_t index, float phi) const {
    target[index] = sign > 0.0f ? target[index] + phi : target[index] - phi;
  }
};

// grid (ceil(H / tile_rows), B); dynamic shared memory C * (tile_rows + 2) * (W + 2) floats.
// weight_t (C_in, 9, Cp) float32: weight[oc][ic][ky][kx] at (ic * 9 + ky * 3 + kx) * Cp + oc, zero for
// oc >= C (Cp = C rounded up to kPhiOcBlock). keep = 1 - ratio, mix = ratio.
template <class Source, class Sink>
__global__ void __launch_bounds__(kPhiThreads)
    phi_tile_kernel(Source source, Sink sink, const float* __restrict__ weight_t, const float* __restrict__ bias,
                    float keep, float mix, int64_t C, int64_t Cp, int64_t H, int64_t W, int64_t tile_rows) {
  extern __shared__ float tile[];
  const int64_t b = blockIdx.y, y0 = static_cast<int64_t>(blockIdx.x) * tile_rows;
  const int64_t rows = (H - y0) < tile_rows ? (H - y0) : tile_rows;
  const int64_t TW = W + 2, TH = tile_rows + 2, plane = TH * TW;

  // Stage 1: rows y0-1 .. y0+rows of every channel with the zero halo, in the order the source reads best.
  const int64_t staged = C * (rows + 2) * TW;
  for (int64_t i = threadIdx.x; i < staged; i += blockDim.x) {
    int64_t c, yy, xx;
    if (Source::kChannelFastest) {
      c = i % C;
      yy = (i / C) / TW;
      xx = (i / C) % TW;
    } else {
      xx = i % TW;
      yy = (i / TW) % (rows + 2);
      c = i / (TW * (rows + 2));
    }
    const int64_t gy = y0 - 1 + yy, gx = xx - 1;
    tile[c * plane + yy * TW + xx] = (gy >= 0 && gy < H && gx >= 0 && gx < W) ? source(b, c, gy, gx) : 0.0f;
  }
  __syncthreads();

  // Stage 2: items of kPhiXBlock columns x kPhiOcBlock channels; columns fastest so that a warp mostly
  // shares one channel block (its weight loads are broadcasts).
  const int64_t x_blocks = (W + kPhiXBlock - 1) / kPhiXBlock, oc_blocks = Cp / kPhiOcBlock;
  const int64_t items = rows * x_blocks * oc_blocks;
  for (int64_t item = threadIdx.x; item < items; item += blockDim.x) {
    const int64_t xb = item % x_blocks, py = (item / x_blocks) % rows, ob = item / (x_blocks * rows);
    const int64_t px = xb * kPhiXBlock, oc0 = ob * kPhiOcBlock;
    float acc[kPhiOcBlock][kPhiXBlock];
#pragma unroll
    for (int o = 0; o < kPhiOcBlock; ++o) {
#pragma unroll
      for (int j = 0; j < kPhiXBlock; ++j) acc[o][j] = 0.0f;
    }
    for (int64_t ic = 0; ic < C; ++ic) {
#pragma unroll
      for (int ky = 0; ky < 3; ++ky) {
        const float* row = tile + ic * plane + (py + ky) * TW + px;
        float v[kPhiXBlock + 2];
#pragma unroll
        for (int j = 0; j < kPhiXBlock + 2; ++j) v[j] = (px + j < TW) ? row[j] : 0.0f;
#pragma unroll
        for (int kx = 0; kx < 3; ++kx) {
          const float4* wp = reinterpret_cast<const float4*>(weight_t + (ic * 9 + ky * 3 + kx) * Cp + oc0);
          const float4 w0 = __ldg(wp), w1 = __ldg(wp + 1);
          const float w[kPhiOcBlock] = {w0.x, w0.y, w0.z, w0.w, w1.x, w1.y, w1.z, w1.w};
#pragma unroll
          for (int o = 0; o < kPhiOcBlock; ++o) {
#pragma unroll
            for (int j = 0; j < kPhiXBlock; ++j) acc[o][j] = fmaf(w[o], v[j + kx], acc[o][j]);
          }
        }
      }
    }
    const int64_t gy = y0 + py;
#pragma unroll
    for (int o = 0; o < kPhiOcBlock; ++o) {
      const int64_t oc = oc0 + o;
      if (oc >= C) break;
      const float bo = bias[oc];
      const float* center = tile + oc * plane + (py + 1) * TW + px + 1;
#pragma unroll
      for (int j = 0; j < kPhiXBlock; ++j) {
        if (px + j < W) sink(((b * C + oc) * H + gy) * W + px + j, keep * center[j] + mix * (acc[o][j] + bo));
      }
    }
  }
}

}  // namespace var_fast::quant_cuda

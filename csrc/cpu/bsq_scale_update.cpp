// bsq_scale_update on CPU: one scale of Infinity's sampler after its bits are drawn (upstream
// autoregressive_infer_cfg with the BSQ VAE): bits -> codes -> trilinear to the summed codes' grid ->
// summed_codes += (in place) -> trilinear to the next scale's VAE grid (pixel_unshuffle(2) with patchify)
// as the transformer's next input (B, L, F). The arithmetic is torch's CPU interpolation's
// (var_fast/bsq_interp.h), so the results equal the reference formulas (var_fast/reference/bsq.py).
//
// Bits outside {0, 1} raise, or, with a `status` tensor, set its kBitOutOfRange flag (as the CUDA op does
// without a host round trip) and read as 0.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <optional>
#include <vector>

#include "var_fast/bsq_host.h"
#include "var_fast/bsq_interp.h"
#include "var_fast/status_flags.h"

namespace var_fast::bsq_cpu {
namespace {

using bsq::Axis;

// Flat position of the first bit outside {0, 1}, or -1.
int64_t first_bad_bit(const at::Tensor& bits) {
  const int64_t* b = bits.const_data_ptr<int64_t>();
  for (int64_t i = 0, n = bits.numel(); i < n; ++i) {
    if (b[i] != 0 && b[i] != 1) return i;
  }
  return -1;
}

std::vector<Axis> axes(int64_t in, int64_t out, bool fused) {
  std::vector<Axis> a(static_cast<size_t>(out));
  for (int64_t o = 0; o < out; ++o) a[static_cast<size_t>(o)] = bsq::axis(in, out, o, fused);
  return a;
}

// Row loops, once with fused multiply-adds compiled for the FMA instructions (torch's AVX2/AVX512 kernels
// run only where those exist) and once with every product rounded.
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define VF_FMA_TARGET __attribute__((target("fma")))
#else
#define VF_FMA_TARGET
#endif

// summed_codes += codes of `bits` interpolated from (hv, wv) to (H, W), rows [begin, end) of (B * H).
struct UpdateArgs {
  const bsq::Shape& s;
  const int64_t* bits;
  float* summed;
  int64_t sb, sc, sy, sx;
  const Axis* ay;
  const Axis* ax;
  float one;
};

template <bool Fused>
VF_BSQ_INLINE void update_rows(const UpdateArgs& a, int64_t begin, int64_t end) {
  const bsq::Shape& s = a.s;
  // The bits of VAE cell (y, x), channel c at [c * step]: pixel_shuffle(2) of the (h, w, 4d) bits with patchify.
  const int64_t step = s.patchify ? 4 : 1;
  auto cell = [&](int64_t b, int64_t y, int64_t x) {
    return s.patchify ? a.bits + ((b * s.h + y / 2) * s.w + x / 2) * s.D + (y % 2) * 2 + x % 2
                      : a.bits + ((b * s.h + y) * s.w + x) * s.D;
  };
  // A code is +-one, so the interpolated value of a channel is one of 16 per cell (the signs of its 4
  // source bits), for each of the two formulas: computed once per cell, looked up per channel.
  const int64_t first_formula = s.d <= bsq::kGenericMaxChannels ? s.d : s.d - s.d % bsq::kTorchVectorWidth;
  for (int64_t row = begin; row < end; ++row) {
    const int64_t b = row / s.H, Y = row % s.H;
    const Axis& y = a.ay[Y];
    for (int64_t X = 0; X < s.W; ++X) {
      const Axis& x = a.ax[X];
      const bsq::Weights w = bsq::weights(y, x);
      float table[2][16];
      for (int m = 0; m < 16; ++m) {
        const float t00 = m & 1 ? a.one : -a.one, t01 = m & 2 ? a.one : -a.one;
        const float t10 = m & 4 ? a.one : -a.one, t11 = m & 8 ? a.one : -a.one;
        if (first_formula > 0) table[0][m] = bsq::combine(t00, t01, t10, t11, y, x, w, 0, s.d, Fused);
        if (first_formula < s.d) table[1][m] = bsq::combine(t00, t01, t10, t11, y, x, w, s.d - 1, s.d, Fused);
      }
      const int64_t *c00 = cell(b, y.i0, x.i0), *c01 = cell(b, y.i0, x.i1);
      const int64_t *c10 = cell(b, y.i1, x.i0), *c11 = cell(b, y.i1, x.i1);
      float* o = a.summed + b * a.sb + Y * a.sy + X * a.sx;
      for (int64_t c = 0; c < s.d; ++c) {
        const int64_t k = c * step;
        const int m = (c00[k] == 1) | (c01[k] == 1) << 1 | (c10[k] == 1) << 2 | (c11[k] == 1) << 3;
        o[c * a.sc] = bsq::add_rn(o[c * a.sc], table[c < first_formula ? 0 : 1][m]);
      }
    }
  }
}
VF_FMA_TARGET void update_rows_fused(const UpdateArgs& a, int64_t begin, int64_t end) { update_rows<true>(a, begin, end); }
void update_rows_rounded(const UpdateArgs& a, int64_t begin, int64_t end) { update_rows<false>(a, begin, end); }

void accumulate_codes(const at::Tensor& bits, const at::Tensor& summed, const bsq::Shape& s, float one,
                      bool fused) {
  const std::vector<Axis> ay = axes(s.hv, s.H, fused), ax = axes(s.wv, s.W, fused);
  const UpdateArgs args{s, bits.const_data_ptr<int64_t>(), summed.mutable_data_ptr<float>(), summed.stride(0),
                        summed.stride(1), summed.stride(2), summed.stride(3), ay.data(), ax.data(), one};
  at::parallel_for(0, s.B * s.H, 1, [&](int64_t begin, int64_t end) {
    fused ? update_rows_fused(args, begin, end) : update_rows_rounded(args, begin, end);
  });
}

// summed_codes interpolated to (nh, nw), as (B, L, F) tokens (pixel_unshuffle(2) with patchify); rows
// [begin, end) of (B * nh).
struct NextArgs {
  const bsq::Shape& s;
  const float* summed;
  int64_t sb, sc, sy, sx;
  const Axis* ay;
  const Axis* ax;
  float* next;
};

template <bool Fused>
VF_BSQ_INLINE void next_rows(const NextArgs& a, int64_t begin, int64_t end) {
  const bsq::Shape& s = a.s;
  const int64_t L = s.next_tokens(), F = s.next_features();
  for (int64_t row = begin; row < end; ++row) {
    const int64_t b = row / s.nh, Y = row % s.nh;
    const Axis& y = a.ay[Y];
    const float* base = a.summed + b * a.sb;
    for (int64_t X = 0; X < s.nw; ++X) {
      const Axis& x = a.ax[X];
      const bsq::Weights w = bsq::weights(y, x);
      const float* p00 = base + y.i0 * a.sy + x.i0 * a.sx;
      const float* p01 = base + y.i0 * a.sy + x.i1 * a.sx;
      const float* p10 = base + y.i1 * a.sy + x.i0 * a.sx;
      const float* p11 = base + y.i1 * a.sy + x.i1 * a.sx;
      const int64_t token = s.patchify ? (Y / 2) * (s.nw / 2) + X / 2 : Y * s.nw + X;
      const int64_t first = s.patchify ? (Y % 2) * 2 + X % 2 : 0, step = s.patchify ? 4 : 1;
      float* o = a.next + (b * L + token) * F + first;
      for (int64_t c = 0; c < s.d; ++c) {
        const int64_t k = c * a.sc;
        o[c * step] = bsq::combine(p00[k], p01[k], p10[k], p11[k], y, x, w, c, s.d, Fused);
      }
    }
  }
}
VF_FMA_TARGET void next_rows_fused(const NextArgs& a, int64_t begin, int64_t end) { next_rows<true>(a, begin, end); }
void next_rows_rounded(const NextArgs& a, int64_t begin, int64_t end) { next_rows<false>(a, begin, end); }

at::Tensor next_input(const at::Tensor& summed, const bsq::Shape& s, bool fused) {
  at::Tensor next = at::empty({s.B, s.next_tokens(), s.next_features()}, summed.options());
  const std::vector<Axis> ay = axes(s.H, s.nh, fused), ax = axes(s.W, s.nw, fused);
  const NextArgs args{s, summed.const_data_ptr<float>(), summed.stride(0), summed.stride(1), summed.stride(2),
                      summed.stride(3), ay.data(), ax.data(), next.mutable_data_ptr<float>()};
  at::parallel_for(0, s.B * s.nh, 1, [&](int64_t begin, int64_t end) {
    fused ? next_rows_fused(args, begin, end) : next_rows_rounded(args, begin, end);
  });
  return next;
}

at::Tensor bsq_scale_update_cpu(const at::Tensor& bits, const at::Tensor& summed_codes, int64_t next_h,
                                int64_t next_w, bool patchify, const std::optional<at::Tensor>& status) {
  constexpr const char* op = "bsq_scale_update";
  const bsq::Shape s = bsq::check_args(bits, summed_codes, next_h, next_w, patchify);
  if (status.has_value()) status::check_status_tensor(op, *status, summed_codes.device());
  at::Tensor b = bits.contiguous();
  if (const int64_t bad = first_bad_bit(b); bad >= 0) {
    TORCH_CHECK(status.has_value(), op, ": bits must be 0 or 1, got ", b.const_data_ptr<int64_t>()[bad],
                " at flat position ", bad, " of bits of shape ", bits.sizes());
    *status->mutable_data_ptr<int>() |= status::kBitOutOfRange;
  }
  const bool fused = bsq::torch_cpu_formula().fma;
  accumulate_codes(b, summed_codes, s, bsq::code_value(s.d), fused);
  if (s.nh == 0) return at::empty({0}, summed_codes.options());
  return next_input(summed_codes, s, fused);
}

}  // namespace
}  // namespace var_fast::bsq_cpu

TORCH_LIBRARY_IMPL(var_fast, CPU, m) { m.impl("bsq_scale_update", &var_fast::bsq_cpu::bsq_scale_update_cpu); }

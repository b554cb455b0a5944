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

// summed_codes += codes of `bits` interpolated from (hv, wv) to (H, W).
void accumulate_codes(const at::Tensor& bits, const at::Tensor& summed, const bsq::Shape& s, float one,
                      bool fused) {
  const int64_t* bp = bits.const_data_ptr<int64_t>();
  float* out = summed.mutable_data_ptr<float>();
  const int64_t sb = summed.stride(0), sc = summed.stride(1), sy = summed.stride(2), sx = summed.stride(3);
  const std::vector<Axis> ay = axes(s.hv, s.H, fused), ax = axes(s.wv, s.W, fused);
  // The bit of channel c at VAE cell (y, x): pixel_shuffle(2) of the (h, w, 4d) bits with patchify.
  auto code = [&](int64_t b, int64_t y, int64_t x, int64_t c) {
    const int64_t bit = s.patchify ? bp[((b * s.h + y / 2) * s.w + x / 2) * s.D + c * 4 + (y % 2) * 2 + x % 2]
                                   : bp[((b * s.h + y) * s.w + x) * s.D + c];
    return bit == 1 ? one : -one;
  };
  at::parallel_for(0, s.B * s.H, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / s.H, Y = row % s.H;
      const Axis& y = ay[static_cast<size_t>(Y)];
      for (int64_t X = 0; X < s.W; ++X) {
        const Axis& x = ax[static_cast<size_t>(X)];
        const bsq::Weights w = bsq::weights(y, x);
        float* o = out + b * sb + Y * sy + X * sx;
        for (int64_t c = 0; c < s.d; ++c) {
          const float v = bsq::combine(code(b, y.i0, x.i0, c), code(b, y.i0, x.i1, c), code(b, y.i1, x.i0, c),
                                       code(b, y.i1, x.i1, c), y, x, w, c, s.d, fused);
          o[c * sc] = bsq::add_rn(o[c * sc], v);
        }
      }
    }
  });
}

// summed_codes interpolated to (nh, nw), as (B, L, F) tokens (pixel_unshuffle(2) with patchify).
at::Tensor next_input(const at::Tensor& summed, const bsq::Shape& s, bool fused) {
  const int64_t L = s.next_tokens(), F = s.next_features();
  at::Tensor next = at::empty({s.B, L, F}, summed.options());
  float* out = next.mutable_data_ptr<float>();
  const float* in = summed.const_data_ptr<float>();
  const int64_t sb = summed.stride(0), sc = summed.stride(1), sy = summed.stride(2), sx = summed.stride(3);
  const std::vector<Axis> ay = axes(s.H, s.nh, fused), ax = axes(s.W, s.nw, fused);
  at::parallel_for(0, s.B * s.nh, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / s.nh, Y = row % s.nh;
      const Axis& y = ay[static_cast<size_t>(Y)];
      const float* base = in + b * sb;
      for (int64_t X = 0; X < s.nw; ++X) {
        const Axis& x = ax[static_cast<size_t>(X)];
        const bsq::Weights w = bsq::weights(y, x);
        const float* p00 = base + y.i0 * sy + x.i0 * sx;
        const float* p01 = base + y.i0 * sy + x.i1 * sx;
        const float* p10 = base + y.i1 * sy + x.i0 * sx;
        const float* p11 = base + y.i1 * sy + x.i1 * sx;
        const int64_t token = s.patchify ? (Y / 2) * (s.nw / 2) + X / 2 : Y * s.nw + X;
        float* o = out + (b * L + token) * F;
        for (int64_t c = 0; c < s.d; ++c) {
          const int64_t f = s.patchify ? c * 4 + (Y % 2) * 2 + X % 2 : c;
          o[f] = bsq::combine(p00[c * sc], p01[c * sc], p10[c * sc], p11[c * sc], y, x, w, c, s.d, fused);
        }
      }
    }
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

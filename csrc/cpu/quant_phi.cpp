// phi_blend on CPU: (1 - ratio) * h + ratio * (conv3x3(h, weight, zero padding 1) + bias), the
// quantizer's Phi. Direct convolution over a zero-bordered float32 copy of h; a task is (batch element,
// block of 4 output channels): a 16-wide strip of an output row for the 4 channels stays in registers
// across all C*9 taps, and each input load feeds 4 channels.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <cstring>

#include "var_fast/check.h"
#include "var_fast/quant_cpu.h"
#include "var_fast/quant_cpu_simd.h"  // VF_CPU_MULTIVERSION, vf8, load8

namespace var_fast::quant_cpu {
namespace {

constexpr int64_t kStrip = 16;   // output columns per register strip (two 8-float vectors)
constexpr int64_t kOcBlock = 4;  // output channels sharing every input load: 4 x 2 accumulators

struct PhiBatch {
  const float* padded;  // (C, H + 2, W + 2): zero-bordered input planes of one batch element
  const float* weight;  // (C, C, 3, 3)
  const float* bias;    // (C,)
  float* target;        // (C, H, W) of the same batch element
  float keep, mix;      // 1 - ratio, ratio
  int64_t C, H, W;
  int sink;             // 0: store, 1: add, -1: subtract
};

__attribute__((always_inline)) inline void sink_value(float* t, float phi, int sink) {
  *t = sink == 0 ? phi : (sink > 0 ? *t + phi : *t - phi);
}

// phi for output channels [oc0, oc0 + OCB), row y, columns [x0, x0 + n). Full strips (n == kStrip)
// keep the accumulators in vector registers; the tail strip of a row uses the scalar form.
template <int64_t OCB>
__attribute__((always_inline)) inline void phi_strip(const PhiBatch& p, int64_t oc0, int64_t y, int64_t x0,
                                                     int64_t n) {
  const int64_t Wp = p.W + 2, plane = (p.H + 2) * Wp;
  const float* __restrict in = p.padded + (y * Wp + x0);
  const float* __restrict w = p.weight + oc0 * p.C * 9;
  if (n == kStrip) {
    vf8 acc[OCB][2];
    for (int64_t o = 0; o < OCB; ++o) acc[o][0] = acc[o][1] = vf8{};
    for (int64_t ic = 0; ic < p.C; ++ic) {
      for (int64_t tap = 0; tap < 9; ++tap) {
        const float* row = in + ic * plane + (tap / 3) * Wp + tap % 3;
        const vf8 a0 = load8(row), a1 = load8(row + 8);
        for (int64_t o = 0; o < OCB; ++o) {
          const float wv = w[(o * p.C + ic) * 9 + tap];
          acc[o][0] += wv * a0;
          acc[o][1] += wv * a1;
        }
      }
    }
    for (int64_t o = 0; o < OCB; ++o) {
      float conv[kStrip];
      std::memcpy(conv, &acc[o][0], sizeof(vf8));
      std::memcpy(conv + 8, &acc[o][1], sizeof(vf8));
      const float* h = p.padded + (oc0 + o) * plane + (y + 1) * Wp + x0 + 1;
      float* t = p.target + ((oc0 + o) * p.H + y) * p.W + x0;
      const float bias = p.bias[oc0 + o];
      for (int64_t j = 0; j < kStrip; ++j) sink_value(t + j, p.keep * h[j] + p.mix * (conv[j] + bias), p.sink);
    }
    return;
  }
  float acc[OCB][kStrip] = {};
  for (int64_t ic = 0; ic < p.C; ++ic) {
    for (int64_t tap = 0; tap < 9; ++tap) {
      const float* row = in + ic * plane + (tap / 3) * Wp + tap % 3;
      for (int64_t o = 0; o < OCB; ++o) {
        const float wv = w[(o * p.C + ic) * 9 + tap];
        for (int64_t j = 0; j < n; ++j) acc[o][j] += wv * row[j];
      }
    }
  }
  for (int64_t o = 0; o < OCB; ++o) {
    const float* h = p.padded + (oc0 + o) * plane + (y + 1) * Wp + x0 + 1;
    float* t = p.target + ((oc0 + o) * p.H + y) * p.W + x0;
    const float bias = p.bias[oc0 + o];
    for (int64_t j = 0; j < n; ++j) sink_value(t + j, p.keep * h[j] + p.mix * (acc[o][j] + bias), p.sink);
  }
}

// Output channels [oc0, oc0 + count) of one batch element, count <= kOcBlock.
VF_CPU_MULTIVERSION
void phi_channels(const PhiBatch& p, int64_t oc0, int64_t count) {
  for (int64_t y = 0; y < p.H; ++y) {
    for (int64_t x0 = 0; x0 < p.W; x0 += kStrip) {
      const int64_t n = std::min(kStrip, p.W - x0);
      if (count == kOcBlock) {
        phi_strip<kOcBlock>(p, oc0, y, x0, n);
      } else {
        for (int64_t o = 0; o < count; ++o) phi_strip<1>(p, oc0 + o, y, x0, n);
      }
    }
  }
}

at::Tensor phi_blend_cpu(const at::Tensor& h, const at::Tensor& weight, const at::Tensor& bias, double ratio) {
  TORCH_CHECK(h.dim() == 4, "phi_blend: h must be 4-D (B, C, H, W), got shape ", h.sizes());
  VF_CHECK_FLOATING(h);
  var_fast::quant::check_phi_args(weight, bias, h.size(1), h.device(), "phi_blend", "weight", "bias");
  auto out = at::empty(h.sizes(), h.options());
  if (out.numel() == 0) return out;
  const at::Tensor target = h.scalar_type() == at::kFloat ? out : at::empty(h.sizes(), h.options().dtype(at::kFloat));
  phi_blend_padded(pad_planes(h), weight.to(at::kFloat).contiguous(), bias.to(at::kFloat).contiguous(), ratio, target,
                   PhiSink::kStore);
  if (!target.is_same(out)) out.copy_(target);
  return out;
}

}  // namespace

at::Tensor pad_planes(const at::Tensor& h) {
  const int64_t B = h.size(0), C = h.size(1), H = h.size(2), W = h.size(3);
  auto padded = at::zeros({B, C, H + 2, W + 2}, h.options().dtype(at::kFloat));
  if (padded.numel() == 0) return padded;
  const int64_t s0 = h.stride(0), s1 = h.stride(1), s2 = h.stride(2), s3 = h.stride(3);
  float* out = padded.data_ptr<float>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "pad_planes", [&] {
    const scalar_t* src = h.const_data_ptr<scalar_t>();
    at::parallel_for(0, B * C, std::max<int64_t>(1, 16384 / (H * W)), [&](int64_t begin, int64_t end) {
      for (int64_t plane = begin; plane < end; ++plane) {
        const scalar_t* s = src + (plane / C) * s0 + (plane % C) * s1;
        float* d = out + plane * (H + 2) * (W + 2) + (W + 2) + 1;
        for (int64_t y = 0; y < H; ++y) {
          for (int64_t x = 0; x < W; ++x) d[y * (W + 2) + x] = static_cast<float>(s[y * s2 + x * s3]);
        }
      }
    });
  });
  return padded;
}

void phi_blend_padded(const at::Tensor& h_padded, const at::Tensor& weight, const at::Tensor& bias, double ratio,
                      const at::Tensor& target, PhiSink sink) {
  const int64_t B = target.size(0), C = target.size(1), H = target.size(2), W = target.size(3);
  if (target.numel() == 0) return;
  const float* hp = h_padded.const_data_ptr<float>();
  const float* w = weight.const_data_ptr<float>();
  const float* bs = bias.const_data_ptr<float>();
  float* out = target.data_ptr<float>();
  const int sink_sign = sink == PhiSink::kStore ? 0 : (sink == PhiSink::kAdd ? 1 : -1);
  const int64_t plane_in = (H + 2) * (W + 2);
  // As the reference's Phi: scalars cast to float32, h * (1 - r) + (conv + bias) * r.
  const float keep = static_cast<float>(1.0 - ratio), mix = static_cast<float>(ratio);
  if (ratio == 0.0) {  // the reference uses nn.Identity for a zero ratio: no convolution at all
    at::parallel_for(0, B * C, std::max<int64_t>(1, 16384 / (H * W)), [&](int64_t begin, int64_t end) {
      for (int64_t plane = begin; plane < end; ++plane) {
        const float* s = hp + plane * plane_in + (W + 2) + 1;
        float* t = out + plane * H * W;
        for (int64_t y = 0; y < H; ++y) {
          for (int64_t x = 0; x < W; ++x) {
            const float v = s[y * (W + 2) + x];
            t[y * W + x] = sink_sign == 0 ? v : (sink_sign > 0 ? t[y * W + x] + v : t[y * W + x] - v);
          }
        }
      }
    });
    return;
  }
  const int64_t blocks = (C + kOcBlock - 1) / kOcBlock;
  at::parallel_for(0, B * blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / blocks, oc0 = (task % blocks) * kOcBlock;
      const PhiBatch p{hp + b * C * plane_in, w, bs, out + b * C * H * W, keep, mix, C, H, W, sink_sign};
      phi_channels(p, oc0, std::min(kOcBlock, C - oc0));
    }
  });
}

}  // namespace var_fast::quant_cpu

TORCH_LIBRARY_IMPL(var_fast, CPU, m) { m.impl("phi_blend", &var_fast::quant_cpu::phi_blend_cpu); }

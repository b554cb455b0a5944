// phi_blend on CPU: (1 - ratio) * h + ratio * (conv3x3(h, weight, zero padding 1) + bias), the
// quantizer's Phi. Direct convolution, one output plane (b, out channel) per task: a 16-wide strip of an
// output row stays in registers across all C*9 taps of the zero-bordered input.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include "var_fast/check.h"
#include "var_fast/quant_cpu.h"

// GCC/Clang on x86-64 Linux: compile the hot loops for AVX2+FMA too and pick at load time.
#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__))
#define VF_CPU_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define VF_CPU_MULTIVERSION
#endif

namespace var_fast::quant_cpu {
namespace {

constexpr int64_t kStrip = 16;  // output columns accumulated in registers

struct PhiPlane {
  const float* padded;  // (C, H + 2, W + 2) input planes of one batch element
  const float* weight;  // (C, 3, 3) of this output channel
  const float* center;  // (H + 2, W + 2) input plane of this channel (the "h" of the blend)
  float bias, keep, mix;
  int64_t C, H, W;
};

template <int64_t N>
__attribute__((always_inline)) inline void conv_strip(const PhiPlane& p, int64_t y, int64_t x0, int64_t n, float* acc) {
  const int64_t Wp = p.W + 2, plane = (p.H + 2) * Wp;
  for (int64_t ic = 0; ic < p.C; ++ic) {
    for (int64_t ky = 0; ky < 3; ++ky) {
      const float* row = p.padded + ic * plane + (y + ky) * Wp + x0;
      const float* w = p.weight + ic * 9 + ky * 3;
      for (int64_t kx = 0; kx < 3; ++kx) {
        const float wv = w[kx];
        // N is the compile-time strip width (full strips) or 0 for the runtime-width tail.
        for (int64_t j = 0; j < (N > 0 ? N : n); ++j) acc[j] += wv * row[kx + j];
      }
    }
  }
}

VF_CPU_MULTIVERSION
void phi_plane(const PhiPlane& p, float* target, int sink) {
  const int64_t Wp = p.W + 2;
  for (int64_t y = 0; y < p.H; ++y) {
    for (int64_t x0 = 0; x0 < p.W; x0 += kStrip) {
      const int64_t n = std::min(kStrip, p.W - x0);
      float acc[kStrip] = {};
      if (n == kStrip) {
        conv_strip<kStrip>(p, y, x0, n, acc);
      } else {
        conv_strip<0>(p, y, x0, n, acc);
      }
      const float* h = p.center + (y + 1) * Wp + x0 + 1;
      float* t = target + y * p.W + x0;
      for (int64_t j = 0; j < n; ++j) {
        const float phi = p.keep * h[j] + p.mix * (acc[j] + p.bias);
        t[j] = sink == 0 ? phi : (sink > 0 ? t[j] + phi : t[j] - phi);
      }
    }
  }
}

void check_phi_params(const at::Tensor& weight, const at::Tensor& bias, int64_t C, const at::Device& device,
                      const char* op) {
  TORCH_CHECK(weight.dim() == 4 && weight.size(0) == C && weight.size(1) == C && weight.size(2) == 3 &&
                  weight.size(3) == 3,
              op, ": weight must be (C, C, 3, 3) with C = ", C, ", got shape ", weight.sizes());
  TORCH_CHECK(bias.dim() == 1 && bias.size(0) == C, op, ": bias must be (C,) with C = ", C, ", got shape ",
              bias.sizes());
  VF_CHECK_FLOATING(weight);
  VF_CHECK_FLOATING(bias);
  VF_CHECK_DEVICE(weight, device);
  VF_CHECK_DEVICE(bias, device);
}

at::Tensor phi_blend_cpu(const at::Tensor& h, const at::Tensor& weight, const at::Tensor& bias, double ratio) {
  TORCH_CHECK(h.dim() == 4, "phi_blend: h must be 4-D (B, C, H, W), got shape ", h.sizes());
  VF_CHECK_FLOATING(h);
  check_phi_params(weight, bias, h.size(1), h.device(), "phi_blend");
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
  at::parallel_for(0, B * C, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / C, oc = task % C;
      const float* padded_b = hp + b * C * plane_in;
      const PhiPlane p{padded_b, w + oc * C * 9, padded_b + oc * plane_in, bs[oc], keep, mix, C, H, W};
      phi_plane(p, out + task * H * W, sink_sign);
    }
  });
}

}  // namespace var_fast::quant_cpu

TORCH_LIBRARY_IMPL(var_fast, CPU, m) { m.impl("phi_blend", &var_fast::quant_cpu::phi_blend_cpu); }

// area_downsample and bicubic_upsample on CPU (F.interpolate 'area' / 'bicubic' with
// align_corners=False), plus the code-map lookup + bicubic used by the sampler step and the encoder.
// Inputs of any floating dtype and any strides; float32 accumulation; one plane (b, c) per task.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <array>
#include <vector>

#include "var_fast/check.h"
#include "var_fast/quant_cpu.h"

namespace var_fast::quant_cpu {
namespace {

using var_fast::quant::area_begin;
using var_fast::quant::area_end;
using var_fast::quant::cubic_taps;
using var_fast::quant::CubicTaps;

// Planes per parallel task: enough work per task to amortize the scheduling.
int64_t plane_grain(int64_t plane_elements) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, plane_elements));
}

// out(b, c, oy, ox) = mean of the window, summed in row-major order and divided by kh then kw (ATen's
// order, so float32 results are those of F.interpolate(mode='area')).
template <typename in_t, typename out_t>
void area_kernel(const in_t* x, const std::array<int64_t, 4>& xs, int64_t B, int64_t C, int64_t H, int64_t W,
                 int64_t size, out_t* out, const std::array<int64_t, 4>& os) {
  std::vector<int64_t> y0(size), y1(size), x0(size), x1(size);
  for (int64_t o = 0; o < size; ++o) {
    y0[o] = area_begin(o, size, H);
    y1[o] = area_end(o, size, H);
    x0[o] = area_begin(o, size, W);
    x1[o] = area_end(o, size, W);
  }
  at::parallel_for(0, B * C, plane_grain(H * W), [&](int64_t begin, int64_t end) {
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t b = plane / C, c = plane % C;
      const in_t* src = x + b * xs[0] + c * xs[1];
      out_t* dst = out + b * os[0] + c * os[1];
      for (int64_t oy = 0; oy < size; ++oy) {
        const float kh = static_cast<float>(y1[oy] - y0[oy]);
        for (int64_t ox = 0; ox < size; ++ox) {
          const float kw = static_cast<float>(x1[ox] - x0[ox]);
          float sum = 0.0f;
          for (int64_t iy = y0[oy]; iy < y1[oy]; ++iy) {
            for (int64_t ix = x0[ox]; ix < x1[ox]; ++ix) sum += static_cast<float>(src[iy * xs[2] + ix * xs[3]]);
          }
          dst[oy * os[2] + ox * os[3]] = static_cast<out_t>(sum / kh / kw);
        }
      }
    }
  });
}

std::vector<CubicTaps> taps_table(int64_t in_size, int64_t out_size) {
  std::vector<CubicTaps> taps(out_size);
  for (int64_t o = 0; o < out_size; ++o) taps[o] = cubic_taps(o, in_size, out_size);
  return taps;
}

// Separable bicubic of one plane: rows[iy][ox] = sum_i wx_i * read(iy, ix_i), then
// write(oy, ox, sum_j wy_j * rows[iy_j][ox]). Same products summed in the same order as ATen's
// 2-D kernel (which evaluates the inner row sums once per tap row), just without recomputing them.
template <typename Read, typename Write>
void bicubic_plane(const Read& read, const Write& write, int64_t h, const std::vector<CubicTaps>& ty,
                   const std::vector<CubicTaps>& tx, std::vector<float>& rows) {
  const int64_t out_h = static_cast<int64_t>(ty.size()), out_w = static_cast<int64_t>(tx.size());
  rows.resize(h * out_w);
  for (int64_t iy = 0; iy < h; ++iy) {
    float* row = rows.data() + iy * out_w;
    for (int64_t ox = 0; ox < out_w; ++ox) {
      const CubicTaps& t = tx[ox];
      row[ox] = read(iy, t.index[0]) * t.weight[0] + read(iy, t.index[1]) * t.weight[1] +
                read(iy, t.index[2]) * t.weight[2] + read(iy, t.index[3]) * t.weight[3];
    }
  }
  for (int64_t oy = 0; oy < out_h; ++oy) {
    const CubicTaps& t = ty[oy];
    const float* r0 = rows.data() + t.index[0] * out_w;
    const float* r1 = rows.data() + t.index[1] * out_w;
    const float* r2 = rows.data() + t.index[2] * out_w;
    const float* r3 = rows.data() + t.index[3] * out_w;
    for (int64_t ox = 0; ox < out_w; ++ox) {
      write(oy, ox, r0[ox] * t.weight[0] + r1[ox] * t.weight[1] + r2[ox] * t.weight[2] + r3[ox] * t.weight[3]);
    }
  }
}

template <typename in_t, typename out_t>
void bicubic_kernel(const in_t* x, const std::array<int64_t, 4>& xs, int64_t B, int64_t C, int64_t h, int64_t w,
                    int64_t size, out_t* out) {
  const auto ty = taps_table(h, size), tx = taps_table(w, size);
  at::parallel_for(0, B * C, plane_grain(size * size), [&](int64_t begin, int64_t end) {
    std::vector<float> rows;
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t b = plane / C, c = plane % C;
      const in_t* src = x + b * xs[0] + c * xs[1];
      out_t* dst = out + plane * size * size;
      bicubic_plane([&](int64_t iy, int64_t ix) { return static_cast<float>(src[iy * xs[2] + ix * xs[3]]); },
                    [&](int64_t oy, int64_t ox, float v) { dst[oy * size + ox] = static_cast<out_t>(v); }, h, ty, tx,
                    rows);
    }
  });
}

std::array<int64_t, 4> strides4(const at::Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)}; }

at::Tensor area_downsample_cpu(const at::Tensor& x, int64_t size) {
  var_fast::quant::check_image_args(x, size, "area_downsample");
  const int64_t B = x.size(0), C = x.size(1);
  auto out = at::empty({B, C, size, size}, x.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "area_downsample", [&] {
    area_kernel<scalar_t, scalar_t>(x.const_data_ptr<scalar_t>(), strides4(x), B, C, x.size(2), x.size(3), size,
                                    out.data_ptr<scalar_t>(), strides4(out));
  });
  return out;
}

at::Tensor bicubic_upsample_cpu(const at::Tensor& x, int64_t size) {
  var_fast::quant::check_image_args(x, size, "bicubic_upsample");
  const int64_t B = x.size(0), C = x.size(1);
  auto out = at::empty({B, C, size, size}, x.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "bicubic_upsample", [&] {
    bicubic_kernel<scalar_t, scalar_t>(x.const_data_ptr<scalar_t>(), strides4(x), B, C, x.size(2), x.size(3), size,
                                       out.data_ptr<scalar_t>());
  });
  return out;
}

}  // namespace

at::Tensor area_downsample_f32(const at::Tensor& x, int64_t size, bool channels_last_rows) {
  const int64_t B = x.size(0), C = x.size(1);
  at::Tensor out;
  std::array<int64_t, 4> os;
  if (channels_last_rows) {
    out = at::empty({B * size * size, C}, x.options());
    os = {size * size * C, 1, size * C, C};
  } else {
    out = at::empty({B, C, size, size}, x.options());
    os = strides4(out);
  }
  if (out.numel() == 0) return out;
  area_kernel<float, float>(x.const_data_ptr<float>(), strides4(x), B, C, x.size(2), x.size(3), size,
                            out.data_ptr<float>(), os);
  return out;
}

at::Tensor bicubic_upsample_f32(const at::Tensor& x, int64_t size) {
  const int64_t B = x.size(0), C = x.size(1);
  auto out = at::empty({B, C, size, size}, x.options());
  if (out.numel() == 0) return out;
  bicubic_kernel<float, float>(x.const_data_ptr<float>(), strides4(x), B, C, x.size(2), x.size(3), size,
                               out.data_ptr<float>());
  return out;
}

at::Tensor embed_upsample_padded_f32(const at::Tensor& tokens, const at::Tensor& codebook, int64_t pn, int64_t H,
                                     int64_t W) {
  const int64_t B = tokens.size(0), C = codebook.size(1);
  const int64_t Hp = H + 2, Wp = W + 2;
  auto padded = at::zeros({B, C, Hp, Wp}, codebook.options());
  if (padded.numel() == 0) return padded;
  const int64_t* tok = tokens.const_data_ptr<int64_t>();
  const float* cb = codebook.const_data_ptr<float>();
  float* out = padded.data_ptr<float>();
  const bool upsample = pn != H || pn != W;
  const auto ty = upsample ? taps_table(pn, H) : std::vector<CubicTaps>{};
  const auto tx = upsample ? taps_table(pn, W) : std::vector<CubicTaps>{};
  at::parallel_for(0, B * C, plane_grain(H * W), [&](int64_t begin, int64_t end) {
    std::vector<float> rows;
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t b = plane / C, c = plane % C;
      const int64_t* tok_b = tok + b * pn * pn;
      float* interior = out + plane * Hp * Wp + Wp + 1;
      auto read = [&](int64_t iy, int64_t ix) { return cb[tok_b[iy * pn + ix] * C + c]; };
      if (upsample) {
        bicubic_plane(read, [&](int64_t oy, int64_t ox, float v) { interior[oy * Wp + ox] = v; }, pn, ty, tx, rows);
      } else {
        for (int64_t y = 0; y < H; ++y) {
          for (int64_t x = 0; x < W; ++x) interior[y * Wp + x] = read(y, x);
        }
      }
    }
  });
  return padded;
}

}  // namespace var_fast::quant_cpu

TORCH_LIBRARY_IMPL(var_fast, CPU, m) {
  m.impl("area_downsample", &var_fast::quant_cpu::area_downsample_cpu);
  m.impl("bicubic_upsample", &var_fast::quant_cpu::bicubic_upsample_cpu);
}

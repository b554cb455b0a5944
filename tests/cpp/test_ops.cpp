// C++ unit tests of the CPU ops through the PyTorch dispatcher (built by CMakeLists.txt, run by ctest).
// Each op is compared with the ATen computation it must reproduce; bad input must throw c10::Error.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <cstdio>
#include <limits>
#include <optional>
#include <functional>
#include <string>

namespace {

int failures = 0;

void expect(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "[ OK ]" : "[FAIL]", what.c_str());
  if (!ok) ++failures;
}

void expect_close(const at::Tensor& got, const at::Tensor& want, const std::string& what, double atol = 1e-5) {
  bool ok = got.sizes() == want.sizes() && at::allclose(got.to(at::kFloat), want.to(at::kFloat), 1e-4, atol);
  expect(ok, what);
}

void expect_throws(const std::function<void()>& fn, const std::string& what) {
  try {
    fn();
  } catch (const c10::Error&) {
    expect(true, what);
    return;
  }
  expect(false, what + " (no error raised)");
}

c10::OperatorHandle op(const char* name) { return c10::Dispatcher::singleton().findSchemaOrThrow(name, ""); }

}  // namespace

int main() {
  at::manual_seed(0);
  const auto f32 = at::TensorOptions().dtype(at::kFloat);

  {  // gated_residual
    auto fn = op("var_fast::gated_residual").typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&)>();
    auto x = at::randn({3, 5, 64}, f32), y = at::randn({3, 5, 64}, f32), g = at::randn({3, 1, 64}, f32);
    expect_close(fn.call(x, y, g), x + g * y, "gated_residual == x + gamma * y");
    expect_throws([&] { fn.call(x, y.narrow(1, 0, 4), g); }, "gated_residual rejects mismatched y");
  }
  {  // adaln_modulate
    auto fn = op("var_fast::adaln_modulate").typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, double)>();
    auto x = at::randn({2, 7, 96}, f32), s = at::randn({2, 1, 96}, f32), b = at::randn({2, 1, 96}, f32);
    auto want = at::layer_norm(x, {96}, {}, {}, 1e-6) * (s + 1) + b;
    expect_close(fn.call(x, s, b, 1e-6), want, "adaln_modulate == layer_norm * (1 + scale) + shift");
  }
  {  // nearest_code
    auto fn = op("var_fast::nearest_code").typed<at::Tensor(const at::Tensor&, const at::Tensor&)>();
    auto z = at::randn({50, 8}, f32), e = at::randn({64, 8}, f32);
    auto d = (z * z).sum(1, true) + (e * e).sum(1);
    d = at::addmm(d, z, e.t(), 1, -2);
    expect(at::equal(fn.call(z, e), d.argmin(1)), "nearest_code == argmin of squared distances");
  }
  {  // resampling
    auto area = op("var_fast::area_downsample").typed<at::Tensor(const at::Tensor&, int64_t)>();
    auto cubic = op("var_fast::bicubic_upsample").typed<at::Tensor(const at::Tensor&, int64_t)>();
    auto f = at::randn({2, 4, 16, 16}, f32), h = at::randn({2, 4, 5, 5}, f32);
    expect_close(area.call(f, 13), at::adaptive_avg_pool2d(f, {13, 13}), "area_downsample == adaptive_avg_pool2d");
    expect_close(cubic.call(h, 16), at::upsample_bicubic2d(h, {16, 16}, false), "bicubic_upsample == upsample_bicubic2d");
  }
  {  // sampling: top_k = 1 is argmax
    auto fn = op("var_fast::sample_top_k_top_p")
                  .typed<at::Tensor(const at::Tensor&, int64_t, double, int64_t, int64_t, const std::optional<at::Tensor>&)>();
    auto logits = at::randn({3, 4, 100}, f32);
    expect(at::equal(fn.call(logits, 1, 0.0, 7, 0, std::nullopt), logits.argmax(-1)),
           "sample_top_k_top_p(top_k=1) == argmax");
    expect_throws([&] { fn.call(logits, 0, 1.5, 0, 0, std::nullopt); }, "sample_top_k_top_p rejects top_p > 1");
    // a NaN row: an error, or with a status word, its flag and token -1 (checked later by check_status)
    auto bad = logits.clone();
    bad.index_put_({0, 1, 5}, std::numeric_limits<float>::quiet_NaN());
    expect_throws([&] { fn.call(bad, 0, 0.0, 0, 0, std::nullopt); }, "sample_top_k_top_p rejects NaN logits");
    auto status = at::zeros({1}, at::kInt);
    auto tokens = fn.call(bad, 0, 0.0, 0, 0, status);
    expect(status.item<int>() != 0 && tokens.index({0, 1}).item<int64_t>() == -1, "a NaN row sets the status flag");
    auto check = op("var_fast::check_status").typed<void(const at::Tensor&, int64_t)>();
    expect_throws([&] { check.call(status, 100); }, "check_status raises the deferred NaN error");
  }
  {  // cached attention over a filled cache
    auto fn = op("var_fast::cached_attention")
                  .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t, double)>();
    auto q = at::randn({2, 3, 5, 64}, f32), k = at::randn({2, 3, 20, 64}, f32), v = at::randn({2, 3, 20, 64}, f32);
    auto kk = k.narrow(2, 0, 12), vv = v.narrow(2, 0, 12);
    auto p = at::softmax(at::matmul(q, kk.transpose(-2, -1)) * 0.125, -1);
    auto want = at::matmul(p, vv).transpose(1, 2).reshape({2, 5, 3 * 64});
    expect_close(fn.call(q, k, v, 12, 0.125), want, "cached_attention == softmax(q k^T) v over the first kv_len");
  }
  std::printf("%d failure(s)\n", failures);
  return failures == 0 ? 0 : 1;
}

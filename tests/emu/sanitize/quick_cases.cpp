// Driver of `make emu-sanitize` (tests/emu/sanitize.py): calls every var_fast_emu op through the
// dispatcher once at a small representative shape and once at an edge shape, checks the results
// (finite, tokens in range, close to an ATen reference where one is a line of code), fails when a
// registered var_fast_emu op has no case, and prints one
// line per case:  case <name> checksum=<fnv1a of the results' bytes> seconds=<s>
// The script links it with sanitized kernel objects and compares the checksums across thread orders.
//
//   quick_cases [substring[,substring...]]   runs the cases whose name contains one of the substrings
//                                            (all by default)
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <set>
#include <string>
#include <vector>

namespace {

using Stack = std::vector<c10::IValue>;
using at::Tensor;

// ---- calling the ops --------------------------------------------------------------------------------------
// A boxed call needs every argument of the schema, defaults included.
std::set<std::string> g_called;  // ops the cases called: every registered op must be among them

Stack call(const std::string& op, Stack args) {
  g_called.insert(op);
  const auto handle = c10::Dispatcher::singleton().findSchemaOrThrow(("var_fast_emu::" + op).c_str(), "");
  handle.callBoxed(&args);
  return args;
}
Tensor call1(const std::string& op, Stack args) { return call(op, std::move(args)).at(0).toTensor(); }
const c10::IValue kNone;

// ---- inputs and checks ------------------------------------------------------------------------------------
at::TensorOptions opts(at::ScalarType dtype) { return at::TensorOptions().dtype(dtype).device(at::kCPU); }
Tensor randn(at::IntArrayRef shape, at::ScalarType dtype = at::kFloat) { return at::randn(shape, opts(at::kFloat)).to(dtype); }
Tensor status_word() { return at::zeros({1}, opts(at::kInt)); }

void expect_finite(const Tensor& t, const char* what) {
  TORCH_CHECK(at::isfinite(t.to(at::kFloat)).all().item<bool>(), what, ": non-finite values");
}
void expect_tokens(const Tensor& t, int64_t V, const char* what) {
  TORCH_CHECK(t.scalar_type() == at::kLong, what, ": tokens must be int64");
  if (t.numel() == 0) return;
  TORCH_CHECK(t.min().item<int64_t>() >= 0 && t.max().item<int64_t>() < V, what, ": tokens outside [0, ", V, ")");
}
void expect_close(const Tensor& got, const Tensor& want, double tol, const char* what) {
  TORCH_CHECK(got.sizes() == want.sizes(), what, ": shape ", got.sizes(), ", want ", want.sizes());
  expect_finite(got, what);
  const double err = (got.to(at::kDouble) - want.to(at::kDouble)).abs().max().item<double>();
  TORCH_CHECK(err <= tol, what, ": max abs error ", err, " > ", tol);
}
double tol_of(at::ScalarType dtype) { return dtype == at::kBFloat16 ? 5e-2 : dtype == at::kHalf ? 1e-2 : 1e-4; }

// FNV-1a over the shape and bytes of each tensor: equal checksums mean bitwise-equal results.
uint64_t checksum(const std::vector<Tensor>& results) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](const void* p, size_t n) {
    for (size_t i = 0; i < n; ++i) h = (h ^ static_cast<const unsigned char*>(p)[i]) * 1099511628211ull;
  };
  for (const Tensor& r : results) {
    const Tensor c = r.contiguous();
    for (int64_t s : c.sizes()) mix(&s, sizeof s);
    mix(c.const_data_ptr(), c.nbytes());
  }
  return h;
}

// ---- sampling -------------------------------------------------------------------------------------------
std::vector<Tensor> sample_representative() {
  const Tensor logits = randn({2, 3, 500}) * 3;
  const Tensor tok = call1("sample_top_k_top_p", {logits, int64_t{50}, 0.9, int64_t{7}, int64_t{0}, kNone});
  expect_tokens(tok, 500, "sample_top_k_top_p");
  return {tok};
}

// V = 60000 with one row: the row does not fit the shared-memory cache (global-memory passes); status given.
std::vector<Tensor> sample_large_vocab_one_row() {
  const Tensor logits = randn({1, 1, 60000}, at::kBFloat16);
  const Tensor status = status_word();
  const Tensor tok = call1("sample_top_k_top_p", {logits, int64_t{0}, 0.95, int64_t{11}, int64_t{5}, status});
  expect_tokens(tok, 60000, "sample_top_k_top_p V=60000");
  TORCH_CHECK(status.item<int>() == 0, "status flags ", status.item<int>());
  return {tok, status};
}

std::vector<Tensor> sample_vocab_of_one() {
  const Tensor tok = call1("sample_top_k_top_p", {randn({1, 2, 1}, at::kHalf), int64_t{5}, 1.0, int64_t{1}, int64_t{0}, kNone});
  TORCH_CHECK(tok.eq(0).all().item<bool>(), "V = 1 must give token 0");
  return {tok};
}

std::vector<Tensor> sample_cfg_representative() {
  const Tensor status = status_word();
  const Tensor tok = call1("sample_cfg_top_k_top_p",
                           {randn({4, 2, 300}, at::kHalf), 1.5, int64_t{20}, 0.8, int64_t{3}, int64_t{0}, status});
  expect_tokens(tok, 300, "sample_cfg_top_k_top_p");
  TORCH_CHECK(tok.sizes() == at::IntArrayRef({2, 2}), "cfg tokens shape ", tok.sizes());
  TORCH_CHECK(status.item<int>() == 0, "status flags ", status.item<int>());
  return {tok, status};
}

// top_k = 1, guidance 0: the argmax of the conditional half; odd V, L = 1.
std::vector<Tensor> sample_cfg_greedy() {
  const Tensor logits = randn({2, 1, 999});
  const Tensor tok = call1("sample_cfg_top_k_top_p", {logits, 0.0, int64_t{1}, 1.0, int64_t{0}, int64_t{0}, kNone});
  TORCH_CHECK(tok.equal(logits.slice(0, 0, 1).argmax(-1)), "greedy CFG token is not the conditional argmax");
  return {tok};
}

// ---- bitwise sampling (Infinity) ------------------------------------------------------------------------
void expect_bits(const Tensor& bits, at::IntArrayRef shape, const char* what) {
  TORCH_CHECK(bits.scalar_type() == at::kLong && bits.sizes() == shape, what, ": bits must be int64 of shape ", shape,
              ", got ", bits.scalar_type(), " ", bits.sizes());
  TORCH_CHECK(bits.ge(0).all().item<bool>() && bits.le(1).all().item<bool>(), what, ": bits outside {0, 1}");
}

// D = 7 (a partial last group of 4 bits), tau and top-p, one partial block, no status.
std::vector<Tensor> bits_plain_odd_d() {
  const Tensor bits = call1("sample_bits", {randn({3, 5, 14}) * 2, 0.8, int64_t{0}, 0.9, int64_t{7}, int64_t{2}, kNone});
  expect_bits(bits, {3, 5, 7}, "sample_bits");
  return {bits};
}

// cfg = 1 (the conditional half), greedy: the larger logit of each pair; 1120 groups (5 blocks, the last partial).
std::vector<Tensor> bits_cfg_greedy() {
  const Tensor logits = randn({4, 70, 64});
  const Tensor status = status_word();
  const Tensor bits =
      call1("sample_cfg_bits", {logits, 1.0, 1.0, int64_t{1}, 0.0, int64_t{3}, int64_t{0}, status});
  const Tensor pairs = logits.slice(0, 0, 2).reshape({2, 70, 32, 2});
  expect_bits(bits, {2, 70, 32}, "sample_cfg_bits");
  TORCH_CHECK(bits.equal(pairs.select(-1, 1).gt(pairs.select(-1, 0)).to(at::kLong)), "greedy bits are not the argmax");
  TORCH_CHECK(status.item<int>() == 0, "status flags ", status.item<int>());
  return {bits, status};
}

// ---- AdaLN ----------------------------------------------------------------------------------------------
Tensor modulate_reference(const Tensor& x, const Tensor& scale, const Tensor& shift) {
  const Tensor xf = x.to(at::kFloat);
  return at::layer_norm(xf, {x.size(-1)}, {}, {}, 1e-6) * (1 + scale.to(at::kFloat)) + shift.to(at::kFloat);
}

std::vector<Tensor> adaln_case(int64_t B, int64_t L, int64_t C, at::ScalarType dtype) {
  const Tensor x = randn({B, L, C}, dtype), scale = randn({B, 1, C}, dtype) * 0.1, shift = randn({B, 1, C}, dtype);
  const Tensor y = call1("adaln_modulate", {x, scale, shift, 1e-6});
  expect_close(y, modulate_reference(x, scale, shift), 4 * tol_of(dtype), "adaln_modulate");
  return {y};
}
std::vector<Tensor> adaln_vectorized() { return adaln_case(2, 5, 64, at::kFloat); }  // C % pack == 0
std::vector<Tensor> adaln_scalar_odd_c() { return adaln_case(1, 3, 7, at::kBFloat16); }

std::vector<Tensor> gated_case(int64_t B, int64_t L, int64_t C, at::ScalarType dtype) {
  const Tensor x = randn({B, L, C}, dtype), y = randn({B, L, C}, dtype), gamma = randn({B, 1, C}, dtype);
  const Tensor out = call1("gated_residual", {x, y, gamma});
  const Tensor want = x.to(at::kFloat) + gamma.to(at::kFloat) * y.to(at::kFloat);
  expect_close(out, want, 2 * tol_of(dtype), "gated_residual");
  return {out};
}
std::vector<Tensor> gated_vectorized() { return gated_case(2, 5, 64, at::kHalf); }
std::vector<Tensor> gated_scalar_odd_c() { return gated_case(1, 1, 13, at::kFloat); }

// gated_residual_adaln: the residual as gated_residual, then adaln_modulate of the (rounded) residual.
std::vector<Tensor> gated_adaln_case(int64_t B, int64_t L, int64_t C, at::ScalarType dtype) {
  const Tensor x = randn({B, L, C}, dtype), y = randn({B, L, C}, dtype), gamma = randn({B, 1, C}, dtype);
  const Tensor scale = randn({B, 1, C}, dtype) * 0.1, shift = randn({B, 1, C}, dtype);
  const Stack out = call("gated_residual_adaln", {x, y, gamma, scale, shift, 1e-6});
  const Tensor res = out.at(0).toTensor(), h = out.at(1).toTensor();
  const Tensor want = x.to(at::kFloat) + gamma.to(at::kFloat) * y.to(at::kFloat);
  expect_close(res, want, 2 * tol_of(dtype), "gated_residual_adaln out");
  expect_close(h, modulate_reference(res, scale, shift), 4 * tol_of(dtype), "gated_residual_adaln h");
  return {res, h};
}
std::vector<Tensor> gated_adaln_vectorized() { return gated_adaln_case(2, 5, 64, at::kBFloat16); }
std::vector<Tensor> gated_adaln_scalar_odd_c() { return gated_adaln_case(1, 1, 13, at::kFloat); }

// bias_gelu: GELU(x + bias), tanh approximation.
std::vector<Tensor> bias_gelu_case(int64_t rows, int64_t N, at::ScalarType dtype) {
  const Tensor x = randn({rows, N}, dtype) * 3, bias = randn({N}, dtype);
  const Tensor out = call1("bias_gelu", {x, bias});
  const Tensor want = at::gelu((x + bias).to(dtype).to(at::kFloat), "tanh");
  expect_close(out, want, 2 * tol_of(dtype), "bias_gelu");
  return {out};
}
std::vector<Tensor> bias_gelu_vectorized() { return bias_gelu_case(5, 64, at::kHalf); }
std::vector<Tensor> bias_gelu_scalar_odd_n() { return bias_gelu_case(3, 13, at::kFloat); }

// ---- attention ------------------------------------------------------------------------------------------
// rope: a (2, L, c/2) cos/sin table, a strided slice of a longer one as the Infinity loop passes it.
std::vector<Tensor> qkv_case(int64_t B, int64_t L, int64_t H, int64_t c, int64_t Lmax, int64_t offset, bool head_scale,
                             at::ScalarType dtype, bool rope = false) {
  const int64_t C = H * c;
  const Tensor qkv = randn({B, L, 3 * C}, dtype), q_bias = randn({C}, dtype), v_bias = randn({C}, dtype);
  const Tensor k_cache = at::zeros({B, H, Lmax, c}, opts(dtype)), v_cache = at::zeros({B, H, Lmax, c}, opts(dtype));
  const c10::IValue scale = head_scale ? c10::IValue(randn({H}).abs() + 0.5) : kNone;
  c10::IValue table = kNone;
  if (rope) {
    const Tensor angles = randn({L + 2, c / 2}) * 3;
    table = at::stack({angles.cos(), angles.sin()}).slice(1, 2, L + 2);
  }
  const Tensor q = call1("qkv_to_cache", {qkv, q_bias, v_bias, scale, k_cache, v_cache, offset, table});
  TORCH_CHECK(q.sizes() == at::IntArrayRef({B, H, L, c}), "q shape ", q.sizes());
  expect_finite(q, "qkv_to_cache q");
  if (rope && head_scale) {  // a rotation keeps the norms: |q| = head_scale, |k| = 1
    const Tensor k_norm = k_cache.slice(2, offset, offset + L).to(at::kFloat).norm(2, {-1});
    expect_close(k_norm, at::ones_like(k_norm), 4 * tol_of(dtype), "qkv_to_cache rope |k|");
    const Tensor q_norm = q.to(at::kFloat).norm(2, {-1});
    expect_close(q_norm, scale.toTensor().view({1, H, 1}).expand({B, H, L}), 8 * tol_of(dtype), "qkv_to_cache rope |q|");
  }
  // v is a plain copy with its bias: exact in any dtype.
  const Tensor v_want = (qkv.slice(2, 2 * C, 3 * C).to(at::kFloat) + v_bias.to(at::kFloat)).to(dtype);
  TORCH_CHECK(v_cache.slice(2, offset, offset + L).equal(v_want.view({B, L, H, c}).permute({0, 2, 1, 3})),
              "qkv_to_cache: v_cache rows differ from v + v_bias");
  return {q, k_cache, v_cache};
}
std::vector<Tensor> qkv_head_dim_64_scaled() { return qkv_case(1, 4, 2, 64, 20, 3, true, at::kHalf); }
std::vector<Tensor> qkv_odd_head_dim_one_row() { return qkv_case(1, 1, 3, 33, 1, 0, false, at::kBFloat16); }
// RoPE (Infinity): head dim 40 leaves lanes 8..31 idle in the second slot (they still join the pair shuffle).
std::vector<Tensor> qkv_rope_head_dim_40() { return qkv_case(2, 3, 2, 40, 9, 4, true, at::kFloat, true); }
std::vector<Tensor> qkv_rope_head_dim_128_bf16() { return qkv_case(1, 5, 1, 128, 5, 0, true, at::kBFloat16, true); }

// pad > 0: cache rows c + pad elements apart (views of wider storage, the base still 16-byte aligned).
std::vector<Tensor> attention_case(int64_t B, int64_t H, int64_t L, int64_t c, int64_t Lmax, int64_t kv_len,
                                   at::ScalarType dtype, int64_t pad = 0) {
  const Tensor q = randn({B, H, L, c}, dtype);
  const Tensor k = randn({B, H, Lmax, c + pad}, dtype).slice(3, 0, c), v = randn({B, H, Lmax, c + pad}, dtype).slice(3, 0, c);
  const double scale = 1.0 / std::sqrt(static_cast<double>(c));
  const Tensor out = call1("cached_attention", {q, k, v, kv_len, scale});
  const Tensor kf = k.slice(2, 0, kv_len).to(at::kFloat), vf = v.slice(2, 0, kv_len).to(at::kFloat);
  const Tensor p = at::softmax(at::matmul(q.to(at::kFloat), kf.transpose(-1, -2)) * scale, -1);
  const Tensor want = at::matmul(p, vf).permute({0, 2, 1, 3}).reshape({B, L, H * c});
  expect_close(out, want, 4 * tol_of(dtype), "cached_attention");
  return {out};
}
// Head dim 64 in 16-bit: the WMMA kernel; kv_len 37 is not a multiple of its key tile.
std::vector<Tensor> attention_wmma_fp16() { return attention_case(1, 2, 3, 64, 40, 37, at::kHalf); }
std::vector<Tensor> attention_wmma_bf16() { return attention_case(1, 1, 2, 64, 24, 19, at::kBFloat16); }
// Cache rows 65 halves (130 bytes) apart: the WMMA kernel must load K/V element by element
// (attention_launch.h cache_rows_aligned16); a 16-byte load there is misaligned (UBSan: alignment).
std::vector<Tensor> attention_wmma_unaligned_cache_rows() { return attention_case(1, 2, 3, 64, 20, 17, at::kHalf, 1); }
// An odd head dim in float32, one query row: the CUDA-core kernel.
std::vector<Tensor> attention_simt_odd_head_dim() { return attention_case(2, 1, 1, 33, 7, 5, at::kFloat); }

// ---- quantization ---------------------------------------------------------------------------------------
std::vector<Tensor> nearest_case(int64_t N, int64_t V, int64_t C) {
  const Tensor z = randn({N, C}), codebook = randn({V, C});
  const Tensor tok = call1("nearest_code", {z, codebook});
  expect_tokens(tok, V, "nearest_code");
  const Tensor dist = (z.unsqueeze(1) - codebook.unsqueeze(0)).pow(2).sum(-1);
  const Tensor chosen = dist.gather(1, tok.unsqueeze(1)).squeeze(1);
  TORCH_CHECK((chosen - std::get<0>(dist.min(1))).abs().max().item<float>() <= 1e-4, "nearest_code: not the nearest");
  return {tok};
}
std::vector<Tensor> nearest_representative() { return nearest_case(37, 100, 8); }
std::vector<Tensor> nearest_single_code() { return nearest_case(3, 1, 5); }

std::vector<Tensor> area_case(int64_t C, int64_t H, int64_t size) {
  const Tensor x = randn({1, C, H, H});
  const Tensor y = call1("area_downsample", {x, size});
  expect_close(y, at::adaptive_avg_pool2d(x, {size, size}), 1e-5, "area_downsample");
  return {y};
}
std::vector<Tensor> area_uneven() { return area_case(4, 10, 3); }
std::vector<Tensor> area_to_1x1() { return area_case(3, 5, 1); }

std::vector<Tensor> bicubic_case(int64_t C, int64_t h, int64_t size) {
  const Tensor x = randn({1, C, h, h});
  const Tensor y = call1("bicubic_upsample", {x, size});
  expect_close(y, at::upsample_bicubic2d(x, {size, size}, false), 1e-4, "bicubic_upsample");
  return {y};
}
std::vector<Tensor> bicubic_representative() { return bicubic_case(4, 3, 10); }
std::vector<Tensor> bicubic_from_1x1() { return bicubic_case(2, 1, 5); }

std::vector<Tensor> phi_case(int64_t B, int64_t C, int64_t H) {
  const Tensor h = randn({B, C, H, H}), w = randn({C, C, 3, 3}) * 0.2, b = randn({C});
  const Tensor y = call1("phi_blend", {h, w, b, 0.5});
  expect_close(y, 0.5 * h + 0.5 * at::conv2d(h, w, b, 1, 1), 1e-4, "phi_blend");
  return {y};
}
std::vector<Tensor> phi_representative() { return phi_case(1, 8, 5); }
std::vector<Tensor> phi_1x1_map() { return phi_case(2, 3, 1); }

std::vector<Tensor> sampler_step_without_status() {
  const int64_t B = 2, C = 8, H = 6, V = 50, pn = 3;
  const Tensor tokens = at::randint(V, {B, pn * pn}, opts(at::kLong));
  const Tensor f_hat = randn({B, C, H, H});
  const Tensor next = call1("quant_sampler_step", {tokens, randn({V, C}), f_hat, randn({C, C, 3, 3}) * 0.2, randn({C}),
                                                   0.5, int64_t{4}, kNone});
  TORCH_CHECK(next.sizes() == at::IntArrayRef({B, C, 4, 4}), "next shape ", next.sizes());
  expect_finite(next, "quant_sampler_step next");
  expect_finite(f_hat, "quant_sampler_step f_hat");
  return {next, f_hat};
}

// Last scale (next_size 0) with a status word: first valid tokens (flag stays 0), then one token = V.
std::vector<Tensor> sampler_step_with_status_last_scale() {
  const int64_t B = 1, C = 3, H = 5, V = 7, pn = 5;
  const Tensor codebook = randn({V, C}), w = randn({C, C, 3, 3}) * 0.2, b = randn({C});
  Tensor tokens = at::randint(V, {B, pn * pn}, opts(at::kLong));
  const Tensor f_hat = randn({B, C, H, H}), status = status_word();
  const Tensor next = call1("quant_sampler_step", {tokens, codebook, f_hat, w, b, 0.25, int64_t{0}, status});
  TORCH_CHECK(next.numel() == 0, "last scale must return an empty tensor");
  TORCH_CHECK(status.item<int>() == 0, "status flags ", status.item<int>());
  expect_finite(f_hat, "quant_sampler_step f_hat");
  tokens[0][7] = V;
  const Tensor bad_status = status_word();
  call1("quant_sampler_step", {tokens, codebook, f_hat.clone(), w, b, 0.25, int64_t{0}, bad_status});
  TORCH_CHECK(bad_status.item<int>() == 16, "token V must set kTokenOutOfRange (16), got ", bad_status.item<int>());
  return {f_hat, status, bad_status};
}

std::vector<Tensor> encode_case(int64_t B, int64_t C, int64_t V, std::vector<int64_t> patch_nums,
                                std::vector<int64_t> phi_index, int64_t K) {
  const int64_t H = patch_nums.back();
  const Stack out = call("quant_encode", {randn({B, C, H, H}), randn({V, C}), randn({K, C, C, 3, 3}) * 0.2,
                                          randn({K, C}), phi_index, 0.5, patch_nums});
  const std::vector<Tensor> tokens = out.at(0).toTensorVector();
  TORCH_CHECK(tokens.size() == patch_nums.size(), "quant_encode: ", tokens.size(), " scales");
  for (size_t si = 0; si < tokens.size(); ++si) {
    TORCH_CHECK(tokens[si].sizes() == at::IntArrayRef({B, patch_nums[si] * patch_nums[si]}), "scale ", si, " shape");
    expect_tokens(tokens[si], V, "quant_encode");
  }
  return tokens;
}
std::vector<Tensor> encode_three_scales() { return encode_case(1, 8, 40, {1, 3, 6}, {0, 1, 1}, 2); }
std::vector<Tensor> encode_odd_sizes_single_code() { return encode_case(2, 3, 1, {1, 2, 5}, {0, 0, 0}, 1); }

// ---- check_status ----------------------------------------------------------------------------------------
std::vector<Tensor> check_status_flags() {
  call("check_status", {status_word(), int64_t{10}});  // no flag: returns
  bool raised = false;
  try {
    call("check_status", {status_word().fill_(16), int64_t{10}});
  } catch (const c10::Error&) {
    raised = true;
  }
  TORCH_CHECK(raised, "check_status must raise for kTokenOutOfRange");
  return {};
}

struct Case {
  const char* name;
  std::function<std::vector<Tensor>()> run;
};
const std::vector<Case> kCases = {
    {"sample_representative", sample_representative},
    {"sample_large_vocab_one_row", sample_large_vocab_one_row},
    {"sample_vocab_of_one", sample_vocab_of_one},
    {"sample_cfg_representative", sample_cfg_representative},
    {"sample_cfg_greedy", sample_cfg_greedy},
    {"adaln_vectorized", adaln_vectorized},
    {"adaln_scalar_odd_c", adaln_scalar_odd_c},
    {"gated_vectorized", gated_vectorized},
    {"gated_scalar_odd_c", gated_scalar_odd_c},
    {"gated_adaln_vectorized", gated_adaln_vectorized},
    {"gated_adaln_scalar_odd_c", gated_adaln_scalar_odd_c},
    {"bias_gelu_vectorized", bias_gelu_vectorized},
    {"bias_gelu_scalar_odd_n", bias_gelu_scalar_odd_n},
    {"qkv_head_dim_64_scaled", qkv_head_dim_64_scaled},
    {"qkv_odd_head_dim_one_row", qkv_odd_head_dim_one_row},
    {"qkv_rope_head_dim_40", qkv_rope_head_dim_40},
    {"qkv_rope_head_dim_128_bf16", qkv_rope_head_dim_128_bf16},
    {"attention_wmma_fp16", attention_wmma_fp16},
    {"attention_wmma_bf16", attention_wmma_bf16},
    {"attention_wmma_unaligned_cache_rows", attention_wmma_unaligned_cache_rows},
    {"attention_simt_odd_head_dim", attention_simt_odd_head_dim},
    {"nearest_representative", nearest_representative},
    {"nearest_single_code", nearest_single_code},
    {"area_uneven", area_uneven},
    {"area_to_1x1", area_to_1x1},
    {"bicubic_representative", bicubic_representative},
    {"bicubic_from_1x1", bicubic_from_1x1},
    {"phi_representative", phi_representative},
    {"phi_1x1_map", phi_1x1_map},
    {"sampler_step_without_status", sampler_step_without_status},
    {"sampler_step_with_status_last_scale", sampler_step_with_status_last_scale},
    {"encode_three_scales", encode_three_scales},
    {"encode_odd_sizes_single_code", encode_odd_sizes_single_code},
    {"check_status_flags", check_status_flags},
    {"bits_plain_odd_d", bits_plain_odd_d},
    {"bits_cfg_greedy", bits_cfg_greedy},
};

}  // namespace

int main(int argc, char** argv) {
  at::set_num_threads(1);  // libtorch's thread pool is not instrumented
  const char* filter = argc > 1 ? argv[1] : "";
  std::vector<std::string> wanted;  // the comma-separated substrings; none: every case
  for (std::string rest = filter; !rest.empty();) {
    const size_t comma = rest.find(',');
    wanted.push_back(rest.substr(0, comma));
    rest = comma == std::string::npos ? "" : rest.substr(comma + 1);
  }
  int ran = 0, failed = 0;
  for (const Case& c : kCases) {
    const bool selected = wanted.empty() || std::any_of(wanted.begin(), wanted.end(), [&](const std::string& w) {
      return std::strstr(c.name, w.c_str()) != nullptr;
    });
    if (!selected) continue;
    at::manual_seed(1234);  // the same inputs whatever subset runs
    const auto t0 = std::chrono::steady_clock::now();
    try {
      const std::vector<Tensor> results = c.run();
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::printf("case %s checksum=%016" PRIx64 " seconds=%.2f\n", c.name, checksum(results), s);
    } catch (const std::exception& e) {
      std::printf("FAILED %s: %s\n", c.name, e.what());
      ++failed;
    }
    std::fflush(stdout);
    ++ran;
  }
  if (*filter == '\0') {  // a new op without a case here fails the run
    for (const c10::OperatorName& name : c10::Dispatcher::singleton().getAllOpNames()) {
      const std::string prefix = "var_fast_emu::";
      if (name.name.rfind(prefix, 0) == 0 && !g_called.count(name.name.substr(prefix.size()))) {
        std::printf("FAILED %s: no case calls it\n", name.name.c_str());
        ++failed;
      }
    }
  }
  std::printf("%d cases, %d failed\n", ran, failed);
  return failed == 0 && ran > 0 ? 0 : 1;
}

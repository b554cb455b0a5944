// qkv_to_cache and cached_attention on the kernel device: checks, allocation and the launch plans of
// the kernels of var_fast/attention.cuh (plans: var_fast/attention_launch.h).
#include <ATen/MemoryOverlap.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cstdint>
#include <limits>
#include <optional>

#include "var_fast/alignment.h"
#include "var_fast/attention_checks.h"
#include "var_fast/attention_launch.h"
#include "var_fast/kernel_device.h"

namespace var_fast {
namespace {

static_assert(attention::kMaxHeadDim == attention_checks::kMaxHeadDim,
              "the launcher's head-dim check must match the kernels' limit");

constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();

attention::CacheStrides strides_of(const at::Tensor& cache) {
  return {cache.stride(0), cache.stride(1), cache.stride(2), cache.stride(3)};
}

// ---------------------------------------------------------------------------------------------------
at::Tensor qkv_to_cache_on_device(const at::Tensor& qkv, const at::Tensor& q_bias, const at::Tensor& v_bias,
                                  const std::optional<at::Tensor>& head_scale, at::Tensor& k_cache,
                                  at::Tensor& v_cache, int64_t offset, const std::optional<at::Tensor>& rope) {
  VF_CHECK_KERNEL_DEVICE("qkv_to_cache", qkv);
  const at::Device dev = qkv.device();
  attention_checks::check_qkv_to_cache_inputs(qkv, q_bias, v_bias, head_scale, k_cache, v_cache, offset, rope, dev);
  const int64_t B = qkv.size(0), L = qkv.size(1), H = k_cache.size(1), c = k_cache.size(3);
  TORCH_CHECK(L <= kInt32Max && H <= kInt32Max, "qkv_to_cache: qkv's length and the head count must fit in int32");
  TORCH_CHECK(attention::qkv_to_cache_blocks(B * L * H) <= kInt32Max,
              "qkv_to_cache: too many (batch, position, head) rows for one grid: ", B * L * H);
  at::assert_no_internal_overlap(k_cache);
  at::assert_no_internal_overlap(v_cache);
  at::assert_no_overlap(k_cache, v_cache);

  const KernelDeviceGuard guard(dev);
  const Stream stream = current_stream();
  auto q = at::empty({B, H, L, c}, qkv.options());
  if (q.numel() == 0) return q;
  const auto qkv_c = qkv.contiguous();
  const auto q_bias_c = q_bias.contiguous();
  const auto v_bias_c = v_bias.contiguous();
  std::optional<at::Tensor> head_scale_f;
  if (head_scale.has_value()) head_scale_f = head_scale->reshape({H}).to(at::kFloat).contiguous();

  attention::QkvToCacheParams params;
  params.qkv = qkv_c.const_data_ptr();
  params.q_bias = q_bias_c.const_data_ptr();
  params.v_bias = v_bias_c.const_data_ptr();
  params.head_scale = head_scale_f ? head_scale_f->const_data_ptr<float>() : nullptr;
  if (rope.has_value()) {  // read in place with its strides: no copy (the loop passes a slice of its table)
    params.rope = rope->const_data_ptr<float>();
    params.rs = {rope->stride(0), rope->stride(1), rope->stride(2)};
  }
  params.q_out = q.mutable_data_ptr();
  params.k_cache = k_cache.mutable_data_ptr();
  params.ks = strides_of(k_cache);
  params.v_cache = v_cache.mutable_data_ptr();
  params.vs = strides_of(v_cache);
  params.rows = B * L * H;
  params.L = static_cast<int>(L);
  params.H = static_cast<int>(H);
  params.c = static_cast<int>(c);
  params.offset = offset;
  attention::run_qkv_to_cache(params, kernel_dtype(qkv), attention::plan_qkv_to_cache(params), stream);
  return q;
}

// ---------------------------------------------------------------------------------------------------
at::Tensor cached_attention_on_device(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                                      int64_t kv_len, double scale) {
  VF_CHECK_KERNEL_DEVICE("cached_attention", q);
  attention_checks::check_cached_attention_inputs(q, k_cache, v_cache, kv_len, scale, q.device());
  const int64_t B = q.size(0), H = q.size(1), L = q.size(2), c = q.size(3);
  TORCH_CHECK(L <= kInt32Max && H <= kInt32Max && kv_len <= kInt32Max,
              "cached_attention: q's length, heads and kv_len must fit in int32");

  const KernelDeviceGuard guard(q.device());
  const Stream stream = current_stream();
  auto out = at::empty({B, L, H * c}, q.options());
  if (out.numel() == 0) return out;
  auto qc = q.contiguous();
  if (!is_aligned16(qc.const_data_ptr())) qc = qc.clone();  // the tensor-core path moves q rows in 16-byte chunks
  // The kernels read cache rows with unit stride; other layouts get a compact copy of the used part.
  const auto rows_of = [&](const at::Tensor& cache) {
    return cache.stride(3) == 1 ? cache : cache.narrow(2, 0, kv_len).contiguous();
  };
  const auto k = rows_of(k_cache), v = rows_of(v_cache);
  const DType dtype = kernel_dtype(q);

  attention::AttentionParams params;
  params.q = qc.const_data_ptr();
  params.k_cache = k.const_data_ptr();
  params.ks = strides_of(k);
  params.v_cache = v.const_data_ptr();
  params.vs = strides_of(v);
  params.out = out.mutable_data_ptr();
  params.B = B;
  params.H = static_cast<int>(H);
  params.L = static_cast<int>(L);
  params.D = static_cast<int>(c);
  params.kv_len = static_cast<int>(kv_len);
  params.scale_log2 = static_cast<float>(scale * 1.4426950408889634);  // exp(x) = exp2(x * log2 e)
  params.vec_kv = attention::cache_rows_aligned16(is_aligned16(params.k_cache), params.ks, dtype) &&
                  attention::cache_rows_aligned16(is_aligned16(params.v_cache), params.vs, dtype);

  const DeviceLimits& limits = device_limits(q.device());
  const attention::AttentionPlan plan =
      attention::plan_cached_attention(params, attention::choose_attention_kernel(dtype, c, limits), limits);
  TORCH_CHECK(plan.blocks <= kInt32Max, "cached_attention: too many (batch, head, query tile) blocks: ", plan.blocks);
  TORCH_CHECK(plan.smem_fits, "cached_attention needs ", plan.launch.smem,
              " bytes of shared memory per block for this head dim, the device allows ", plan.smem_limit);
  attention::run_cached_attention(params, dtype, plan, stream);
  return out;
}

}  // namespace
}  // namespace var_fast

TORCH_LIBRARY_IMPL(VAR_FAST_KERNEL_NAMESPACE, VAR_FAST_KERNEL_DISPATCH_KEY, m) {
  m.impl("qkv_to_cache", &var_fast::qkv_to_cache_on_device);
  m.impl("cached_attention", &var_fast::cached_attention_on_device);
}

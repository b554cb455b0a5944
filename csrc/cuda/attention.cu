// qkv_to_cache and cached_attention on CUDA: launchers of csrc/include/var_fast/attention.cuh.
#include <ATen/Dispatch.h>
#include <ATen/MemoryOverlap.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <climits>
#include <cmath>
#include <cstdint>
#include <optional>
#include <type_traits>

#include "var_fast/attention.cuh"
#include "var_fast/attention_checks.h"

namespace var_fast {
namespace {

static_assert(attention::kMaxHeadDim == attention_checks::kMaxHeadDim,
              "the launcher's head-dim check must match the kernels' limit");

bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

attention::CacheStrides strides_of(const at::Tensor& cache) {
  return {cache.stride(0), cache.stride(1), cache.stride(2), cache.stride(3)};
}

int device_attribute(cudaDeviceAttr attr, c10::DeviceIndex device) {
  int value = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&value, attr, device));
  return value;
}

// Kernels with more than the default 48 KiB of dynamic shared memory have to ask for it.
template <typename Kernel>
void allow_dynamic_smem(Kernel kernel, size_t bytes, c10::DeviceIndex device) {
  const int limit = device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  TORCH_CHECK(bytes <= static_cast<size_t>(limit), "cached_attention needs ", bytes,
              " bytes of shared memory per block for this head dim, the device allows ", limit);
  if (bytes > 48 * 1024)
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
}

// ---------------------------------------------------------------------------------------------------
at::Tensor qkv_to_cache_cuda(const at::Tensor& qkv, const at::Tensor& q_bias, const at::Tensor& v_bias,
                             const std::optional<at::Tensor>& head_scale, at::Tensor& k_cache, at::Tensor& v_cache,
                             int64_t offset) {
  TORCH_CHECK(qkv.is_cuda(), "qkv must be a CUDA tensor, got ", qkv.device());
  const at::Device dev = qkv.device();
  attention_checks::check_qkv_to_cache_inputs(qkv, q_bias, v_bias, head_scale, k_cache, v_cache, offset, dev);
  const int64_t B = qkv.size(0), L = qkv.size(1), H = k_cache.size(1), c = k_cache.size(3);
  TORCH_CHECK(L <= INT_MAX && H <= INT_MAX, "qkv's length and the head count must fit in int32");
  at::assert_no_internal_overlap(k_cache);
  at::assert_no_internal_overlap(v_cache);
  at::assert_no_overlap(k_cache, v_cache);

  const c10::cuda::CUDAGuard guard(dev);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  auto q = at::empty({B, H, L, c}, qkv.options());
  if (q.numel() == 0) return q;
  const auto qkv_c = qkv.contiguous();
  const auto q_bias_c = q_bias.contiguous();
  const auto v_bias_c = v_bias.contiguous();
  std::optional<at::Tensor> head_scale_f;
  if (head_scale.has_value()) head_scale_f = head_scale->reshape({H}).to(at::kFloat).contiguous();
  const int64_t rows = B * L * H;  // one warp each
  const int64_t blocks = (rows + attention::kQkvWarpsPerBlock - 1) / attention::kQkvWarpsPerBlock;
  constexpr int threads = attention::kQkvWarpsPerBlock * attention::kWarpSize;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, qkv.scalar_type(), "qkv_to_cache_cuda", [&] {
    attention::qkv_to_cache_kernel<scalar_t><<<blocks, threads, 0, stream>>>(
        qkv_c.const_data_ptr<scalar_t>(), q_bias_c.const_data_ptr<scalar_t>(), v_bias_c.const_data_ptr<scalar_t>(),
        head_scale_f ? head_scale_f->const_data_ptr<float>() : nullptr, q.mutable_data_ptr<scalar_t>(),
        k_cache.mutable_data_ptr<scalar_t>(), strides_of(k_cache), v_cache.mutable_data_ptr<scalar_t>(),
        strides_of(v_cache), rows, static_cast<int>(L), static_cast<int>(H), static_cast<int>(c), offset);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return q;
}

// ---------------------------------------------------------------------------------------------------
template <typename scalar_t, int D>
void launch_attention_wmma(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::Tensor& out,
                           int64_t kv_len, float scale_log2, c10::DeviceIndex device, cudaStream_t stream) {
  using Tile = attention::WmmaAttentionTile<D>;
  const int64_t B = q.size(0), H = q.size(1), L = q.size(2);
  const int64_t n_qtiles = (L + Tile::BQ - 1) / Tile::BQ;
  const int64_t blocks = B * H * n_qtiles;
  TORCH_CHECK(blocks <= INT_MAX, "cached_attention: too many (batch, head, query tile) blocks: ", blocks);
  // 16-byte loads of K/V rows need 16-byte aligned rows: base pointer and every row stride.
  const auto rows_aligned = [](const at::Tensor& t) {
    return aligned16(t.const_data_ptr()) && t.stride(0) % 8 == 0 && t.stride(1) % 8 == 0 && t.stride(2) % 8 == 0;
  };
  const bool vec_kv = rows_aligned(k) && rows_aligned(v);
  auto kernel = attention::attention_wmma_kernel<scalar_t, D>;
  allow_dynamic_smem(kernel, Tile::kSmemBytes, device);
  kernel<<<blocks, Tile::kWarps * attention::kWarpSize, Tile::kSmemBytes, stream>>>(
      q.const_data_ptr<scalar_t>(), k.const_data_ptr<scalar_t>(), strides_of(k), v.const_data_ptr<scalar_t>(),
      strides_of(v), out.mutable_data_ptr<scalar_t>(), static_cast<int>(H), static_cast<int>(L),
      static_cast<int>(kv_len), static_cast<int>(n_qtiles), scale_log2, vec_kv);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t>
void launch_attention_simt(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::Tensor& out,
                           int64_t kv_len, float scale_log2, c10::DeviceIndex device, cudaStream_t stream) {
  using Tile = attention::SimtAttentionTile;
  const int64_t B = q.size(0), H = q.size(1), L = q.size(2), D = q.size(3);
  const int64_t n_qtiles = (L + Tile::BQ - 1) / Tile::BQ;
  const int64_t blocks = B * H * n_qtiles;
  TORCH_CHECK(blocks <= INT_MAX, "cached_attention: too many (batch, head, query tile) blocks: ", blocks);
  const size_t smem = Tile::smem_bytes(static_cast<int>(D));
  auto kernel = attention::attention_simt_kernel<scalar_t>;
  allow_dynamic_smem(kernel, smem, device);
  kernel<<<blocks, Tile::kWarps * attention::kWarpSize, smem, stream>>>(
      q.const_data_ptr<scalar_t>(), k.const_data_ptr<scalar_t>(), strides_of(k), v.const_data_ptr<scalar_t>(),
      strides_of(v), out.mutable_data_ptr<scalar_t>(), static_cast<int>(H), static_cast<int>(L), static_cast<int>(D),
      static_cast<int>(kv_len), static_cast<int>(n_qtiles), scale_log2);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor cached_attention_cuda(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                                 int64_t kv_len, double scale) {
  TORCH_CHECK(q.is_cuda(), "q must be a CUDA tensor, got ", q.device());
  attention_checks::check_cached_attention_inputs(q, k_cache, v_cache, kv_len, scale, q.device());
  const int64_t B = q.size(0), H = q.size(1), L = q.size(2), c = q.size(3);
  TORCH_CHECK(L <= INT_MAX && H <= INT_MAX && kv_len <= INT_MAX, "q's length, heads and kv_len must fit in int32");

  const c10::cuda::CUDAGuard guard(q.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  auto out = at::empty({B, L, H * c}, q.options());
  if (out.numel() == 0) return out;
  auto qc = q.contiguous();
  if (!aligned16(qc.const_data_ptr())) qc = qc.clone();  // the tensor-core path moves q rows in 16-byte chunks
  // The kernels read cache rows with unit stride; other layouts get a compact copy of the used part.
  const auto rows_of = [&](const at::Tensor& cache) {
    return cache.stride(3) == 1 ? cache : cache.narrow(2, 0, kv_len).contiguous();
  };
  const auto k = rows_of(k_cache), v = rows_of(v_cache);
  const float scale_log2 = static_cast<float>(scale * 1.4426950408889634);  // exp(x) = exp2(x * log2 e)
  const c10::DeviceIndex device = q.device().index();
  const bool tensor_cores = device_attribute(cudaDevAttrComputeCapabilityMajor, device) >= 8;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "cached_attention_cuda", [&] {
    if constexpr (std::is_same_v<scalar_t, at::Half> || std::is_same_v<scalar_t, at::BFloat16>) {
      if (tensor_cores && c == 64)
        return launch_attention_wmma<scalar_t, 64>(qc, k, v, out, kv_len, scale_log2, device, stream);
      if (tensor_cores && c == 128)
        return launch_attention_wmma<scalar_t, 128>(qc, k, v, out, kv_len, scale_log2, device, stream);
    }
    launch_attention_simt<scalar_t>(qc, k, v, out, kv_len, scale_log2, device, stream);
  });
  return out;
}

}  // namespace
}  // namespace var_fast

TORCH_LIBRARY_IMPL(var_fast, CUDA, m) {
  m.impl("qkv_to_cache", &var_fast::qkv_to_cache_cuda);
  m.impl("cached_attention", &var_fast::cached_attention_cuda);
}

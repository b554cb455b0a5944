// Kernel translation unit of qkv_to_cache and cached_attention: the kernels of var_fast/attention.cuh
// launched by their plans (var_fast/attention_launch.h). nvcc compiles it for the GPU; tests/emu
// compiles the same file for the CUDA emulator.
#include "var_fast/launch.cuh"
#include "var_fast/kernel_dtype.h"

// The dynamic shared memory of every attention kernel (attention.cuh's dynamic_smem).
VAR_FAST_DYNAMIC_SHARED(var_fast::attention, unsigned char, vf_attention_smem)

#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

#include <type_traits>

#include "var_fast/attention.cuh"
#include "var_fast/attention_launch.h"

namespace var_fast::attention {
namespace {

template <typename T>
void run_qkv_typed(const QkvToCacheParams& p, const LaunchPlan& plan, Stream stream) {
  launch(qkv_to_cache_kernel<T>, plan, stream, static_cast<const T*>(p.qkv), static_cast<const T*>(p.q_bias),
         static_cast<const T*>(p.v_bias), p.head_scale, p.rope, p.rs, static_cast<T*>(p.q_out), static_cast<T*>(p.k_cache), p.ks,
         static_cast<T*>(p.v_cache), p.vs, p.rows, p.L, p.H, p.c, p.offset);
}

template <typename T, int D>
void launch_wmma(const AttentionParams& p, const AttentionPlan& plan, Stream stream) {
  launch(attention_wmma_kernel<T, D>, plan.launch, stream, static_cast<const T*>(p.q),
         static_cast<const T*>(p.k_cache), p.ks, static_cast<const T*>(p.v_cache), p.vs, static_cast<T*>(p.out), p.H,
         p.L, p.kv_len, static_cast<int>(plan.n_qtiles), p.scale_log2, p.vec_kv);
}

template <typename T>
void run_attention_typed(const AttentionParams& p, const AttentionPlan& plan, Stream stream) {
  if constexpr (std::is_same_v<T, c10::Half> || std::is_same_v<T, c10::BFloat16>) {
    if (plan.kernel == AttentionKernel::Wmma64) return launch_wmma<T, 64>(p, plan, stream);
    if (plan.kernel == AttentionKernel::Wmma128) return launch_wmma<T, 128>(p, plan, stream);
  }
  TORCH_CHECK(plan.kernel == AttentionKernel::Simt, "cached_attention: no tensor-core kernel for float32");
  launch(attention_simt_kernel<T>, plan.launch, stream, static_cast<const T*>(p.q), static_cast<const T*>(p.k_cache),
         p.ks, static_cast<const T*>(p.v_cache), p.vs, static_cast<T*>(p.out), p.H, p.L, p.D, p.kv_len,
         static_cast<int>(plan.n_qtiles), p.scale_log2);
}

}  // namespace

void run_qkv_to_cache(const QkvToCacheParams& params, DType dtype, const LaunchPlan& plan, Stream stream) {
  with_kernel_dtype(dtype, "qkv_to_cache", [&](auto zero) { run_qkv_typed<decltype(zero)>(params, plan, stream); });
}

void run_cached_attention(const AttentionParams& params, DType dtype, const AttentionPlan& plan, Stream stream) {
  with_kernel_dtype(dtype, "cached_attention", [&](auto zero) { run_attention_typed<decltype(zero)>(params, plan, stream); });
}

}  // namespace var_fast::attention

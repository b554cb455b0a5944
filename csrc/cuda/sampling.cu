// sample_top_k_top_p / sample_cfg_top_k_top_p on CUDA: one 256-thread block per row; the kernel and
// the semantics are in var_fast/sampling.cuh.
//
// Bad rows (NaN, +inf, all -inf) are reported like the CPU op's by reading a device flag after the
// kernel, which waits for the stream. Under CUDA graph capture that read is skipped (a captured graph
// cannot synchronise): bad rows then yield token -1, and the seed and row_offset are baked into the
// captured kernel as constants (re-capture to change them).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <limits>

#include "var_fast/check.h"
#include "var_fast/sampling.cuh"

namespace var_fast {
namespace {
using namespace sampling;

template <typename scalar_t, bool kCfg>
void launch_sample_rows(const SampleParams& params, int64_t rows, cudaStream_t stream) {
  auto kernel = sample_rows_kernel<scalar_t, kCfg>;
  size_t smem = params.cached ? static_cast<size_t>(params.V) * 2 * sizeof(uint32_t) : 0;
  if (smem > 48 * 1024 - sizeof(BlockScratch)) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  }
  kernel<<<static_cast<unsigned>(rows), kLanes, smem, stream>>>(params);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor sample_cuda(const char* op, const at::Tensor& logits, bool cfg, double guidance, int64_t top_k,
                       double top_p, int64_t seed, int64_t row_offset) {
  TORCH_CHECK(logits.is_cuda(), op, ": logits must be a CUDA tensor, got ", logits.device());
  const SamplingPlan plan = plan_sampling(op, logits, cfg, guidance, top_k, top_p, seed, row_offset);
  const c10::cuda::CUDAGuard guard(logits.device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  auto out = at::empty({plan.B, plan.L}, logits.options().dtype(at::kLong));
  const int64_t rows = plan.B * plan.L;
  if (rows == 0) return out;
  TORCH_CHECK(rows <= std::numeric_limits<int32_t>::max(), op, ": at most 2^31 - 1 rows (B * L), got ", rows);
  auto status = at::zeros({1}, logits.options().dtype(at::kInt));

  SampleParams params;
  params.stride_b = logits.stride(0);
  params.stride_l = logits.stride(1);
  params.stride_v = logits.stride(2);
  params.uncond_offset = plan.B * params.stride_b;
  params.L = plan.L;
  params.V = plan.V;
  params.w_cond = plan.w_cond;
  params.w_uncond = plan.w_uncond;
  params.top_k = plan.top_k;
  params.top_p = plan.top_p;
  params.seed = plan.seed;
  params.row_offset = plan.row_offset;
  params.out = out.mutable_data_ptr<int64_t>();
  params.status = status.mutable_data_ptr<int>();
  // Keys and weights of the row stay in shared memory when they fit; otherwise every pass recomputes
  // them from global memory (same numbers, more traffic).
  const auto* props = at::cuda::getCurrentDeviceProperties();
  const size_t cache_bytes = static_cast<size_t>(plan.V) * 2 * sizeof(uint32_t);
  params.cached = cache_bytes + sizeof(BlockScratch) + 1024 <= props->sharedMemPerBlockOptin;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "sample_top_k_top_p_cuda", [&] {
    params.logits = logits.const_data_ptr<scalar_t>();
    if (cfg) {
      launch_sample_rows<scalar_t, true>(params, rows, stream);
    } else {
      launch_sample_rows<scalar_t, false>(params, rows, stream);
    }
  });

  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  C10_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
  if (capture == cudaStreamCaptureStatusNone) {
    int flags = 0;
    C10_CUDA_CHECK(cudaMemcpyAsync(&flags, params.status, sizeof(int), cudaMemcpyDeviceToHost, stream));
    C10_CUDA_CHECK(cudaStreamSynchronize(stream));
    check_row_flags(op, cfg, flags);
  }
  return out;
}

}  // namespace
}  // namespace var_fast

TORCH_LIBRARY_IMPL(var_fast, CUDA, m) {
  using namespace var_fast::sampling;
  m.impl("sample_top_k_top_p", &sample_top_k_top_p_op<&var_fast::sample_cuda>);
  m.impl("sample_cfg_top_k_top_p", &sample_cfg_top_k_top_p_op<&var_fast::sample_cuda>);
}

// sample_top_k_top_p / sample_cfg_top_k_top_p on the kernel device: checks, allocation and the launch
// plan of sample_rows_kernel (one 256-thread block per row; kernel and semantics in var_fast/sampling.cuh).
//
// Bad rows (NaN, +inf, all -inf) set a device flag. With a `status` tensor the flag goes there and
// nothing waits for the device (the fast sampler checks it once per batch). Without one, the flag is
// read back after the kernel, which waits for the stream, and raised like the CPU op's error; a CUDA
// graph cannot contain that wait, so under capture the op refuses to run without a status tensor. A
// captured call bakes the seed and row_offset into the kernel as constants (re-capture to change them).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <limits>
#include <optional>

#include "var_fast/kernel_device.h"
#include "var_fast/sampling.cuh"
#include "var_fast/sampling_launch.h"
#include "var_fast/status_flags.h"

namespace var_fast {
namespace {
using namespace sampling;

at::Tensor sample_on_device(const char* op, const at::Tensor& logits, bool cfg, double guidance, int64_t top_k,
                            double top_p, int64_t seed, int64_t row_offset, const std::optional<at::Tensor>& status) {
  VF_CHECK_KERNEL_DEVICE(op, logits);
  const SamplingPlan plan = plan_sampling(op, logits, cfg, guidance, top_k, top_p, seed, row_offset);
  if (status.has_value()) status::check_status_tensor(op, *status, logits.device());
  const KernelDeviceGuard guard(logits.device());
  const Stream stream = current_stream();
  TORCH_CHECK(status.has_value() || !stream_is_capturing(stream), op,
              ": under CUDA graph capture, pass a status tensor (status=var_fast.ops.new_status(device)) and "
              "check it after the replay (ops.check_status): without one, bad rows are reported by a host read "
              "of the device, which a captured graph cannot do");
  auto out = at::empty({plan.B, plan.L}, logits.options().dtype(at::kLong));
  const int64_t rows = plan.B * plan.L;
  if (rows == 0) return out;
  TORCH_CHECK(rows <= std::numeric_limits<int32_t>::max(), op, ": at most 2^31 - 1 rows (B * L), got ", rows);
  const at::Tensor flags = status.has_value() ? *status : at::zeros({1}, logits.options().dtype(at::kInt));

  SampleParams params;
  params.logits = logits.const_data_ptr();
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
  params.status = flags.mutable_data_ptr<int>();
  params.cached = row_fits_in_shared_memory(plan.V, device_limits(logits.device()));
  run_sample_rows(params, kernel_dtype(logits), cfg, plan_sample_rows(params, rows), stream);

  if (!status.has_value()) check_row_flags(cfg, read_device_int(params.status, stream));
  return out;
}

}  // namespace
}  // namespace var_fast

TORCH_LIBRARY_IMPL(VAR_FAST_KERNEL_NAMESPACE, VAR_FAST_KERNEL_DISPATCH_KEY, m) {
  using namespace var_fast::sampling;
  m.impl("sample_top_k_top_p", &sample_top_k_top_p_op<&var_fast::sample_on_device>);
  m.impl("sample_cfg_top_k_top_p", &sample_cfg_top_k_top_p_op<&var_fast::sample_on_device>);
}

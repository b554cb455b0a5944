// sample_bits / sample_cfg_bits on the kernel device: checks, allocation and the launch plan of
// sample_bits_kernel (one thread per group of 4 bits; kernel and semantics in var_fast/bitwise_sampling.cuh).
//
// Bad pairs (NaN, +inf, both -inf) set a device flag. With a `status` tensor the flag goes there and nothing
// waits for the device; without one, the flag is read back after the kernel (a wait on the stream) and raised
// like the CPU op's error, so under CUDA graph capture the op refuses to run without a status tensor. A
// captured call bakes tau, cfg, the seed and image_offset into the kernel's parameters (re-capture to change
// them).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <cstdint>
#include <limits>
#include <optional>

#include "var_fast/bitwise_sampling.cuh"
#include "var_fast/bitwise_sampling_launch.h"
#include "var_fast/kernel_device.h"
#include "var_fast/status_flags.h"

namespace var_fast {
namespace {
using namespace bitwise_sampling;

at::Tensor sample_bits_on_device(const char* op, const at::Tensor& logits, bool cfg, double cfg_scale, double tau,
                                 int64_t top_k, double top_p, int64_t seed, int64_t image_offset,
                                 const std::optional<at::Tensor>& status) {
  VF_CHECK_KERNEL_DEVICE(op, logits);
  int64_t B = 0;
  BitsParams params = plan_bits(op, logits, cfg, cfg_scale, tau, top_k, top_p, seed, image_offset, B);
  if (status.has_value()) status::check_status_tensor(op, *status, logits.device());
  const KernelDeviceGuard guard(logits.device());
  const Stream stream = current_stream();
  TORCH_CHECK(status.has_value() || !stream_is_capturing(stream), op,
              ": under CUDA graph capture, pass a status tensor (status=var_fast.ops.new_status(device)) and "
              "check it after the replay (ops.check_status): without one, bad pairs are reported by a host read "
              "of the device, which a captured graph cannot do");
  auto out = at::empty({B, params.L, params.D}, logits.options().dtype(at::kLong));
  if (params.groups == 0) return out;
  TORCH_CHECK((params.groups + kThreads - 1) / kThreads <= std::numeric_limits<int32_t>::max(), op,
              ": at most 2^31 - 1 blocks of ", kThreads, " groups of 4 bits, got ", params.groups, " groups");
  const at::Tensor flags = status.has_value() ? *status : at::zeros({1}, logits.options().dtype(at::kInt));
  params.out = out.mutable_data_ptr<int64_t>();
  params.status = flags.mutable_data_ptr<int>();
  run_sample_bits(params, kernel_dtype(logits), cfg, plan_sample_bits(params), stream);
  if (!status.has_value()) {
    const int bad = read_device_int(params.status, stream);
    if (bad != 0) status::raise_for_flags(bad, 0);
  }
  return out;
}

}  // namespace
}  // namespace var_fast

TORCH_LIBRARY_IMPL(VAR_FAST_KERNEL_NAMESPACE, VAR_FAST_KERNEL_DISPATCH_KEY, m) {
  using namespace var_fast::bitwise_sampling;
  m.impl("sample_bits", &sample_bits_op<&var_fast::sample_bits_on_device>);
  m.impl("sample_cfg_bits", &sample_cfg_bits_op<&var_fast::sample_bits_on_device>);
}

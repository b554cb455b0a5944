// bsq_scale_update on the kernel device: two launches (var_fast/bsq.cuh): the codes of the bits added into
// summed_codes in place, then summed_codes interpolated to the next scale's VAE grid (skipped at the last
// scale). Same arithmetic as the CPU op (var_fast/bsq_interp.h: torch's CPU interpolation; the host's
// torch CPU capability decides the FMAs), so the emulated kernels equal the CPU reference bitwise.
//
// Bits outside {0, 1}: with a `status` tensor the update kernel reads them as 0 and ORs kBitOutOfRange
// into it, and nothing waits for the device (the sampler checks the status once per batch). Without one,
// the bits are checked on the host first (one reduction, one synchronisation) with the CPU op's clear
// error; a CUDA graph cannot contain that wait, so under capture the op refuses to run without a status.
#include <ATen/core/Tensor.h>
#include <ATen/ops/aminmax.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/stack.h>
#include <torch/library.h>

#include <optional>

#include "var_fast/bsq_host.h"
#include "var_fast/bsq_launch.h"
#include "var_fast/kernel_device.h"
#include "var_fast/status_flags.h"

namespace var_fast::bsq_cuda {
namespace {

// One reduction and one device-to-host copy: the clear error the CPU op gives, at the cost of a sync.
void check_bits_on_host(const at::Tensor& bits) {
  const auto [lo, hi] = at::aminmax(bits);
  const at::Tensor range = at::stack({lo, hi}).cpu();
  const int64_t low = range[0].item<int64_t>(), high = range[1].item<int64_t>();
  TORCH_CHECK(low >= 0 && high <= 1, "bsq_scale_update: bits must be 0 or 1, got values in [", low, ", ", high,
              "] in bits of shape ", bits.sizes());
}

BsqStrides strides_of(const at::Tensor& t) { return BsqStrides{t.stride(0), t.stride(1), t.stride(2), t.stride(3)}; }

at::Tensor bsq_scale_update_on_device(const at::Tensor& bits, const at::Tensor& summed_codes, int64_t next_h,
                                      int64_t next_w, bool patchify, const std::optional<at::Tensor>& status) {
  constexpr const char* op = "bsq_scale_update";
  VF_CHECK_KERNEL_DEVICE(op, summed_codes);
  const bsq::Shape s = bsq::check_args(bits, summed_codes, next_h, next_w, patchify);
  if (status.has_value()) status::check_status_tensor(op, *status, summed_codes.device());
  const KernelDeviceGuard guard(summed_codes.device());
  const Stream stream = current_stream();
  TORCH_CHECK(status.has_value() || !stream_is_capturing(stream), op,
              ": under CUDA graph capture, pass a status tensor (status=var_fast.ops.new_status(device)) and "
              "check it after the replay (ops.check_status): without one, the bits are range-checked by a "
              "host read of the device, which a captured graph cannot do");
  const at::Tensor b = bits.contiguous();
  if (!status.has_value()) check_bits_on_host(b);
  const bool fused = bsq::torch_cpu_formula().fma;
  at::Tensor next = s.nh > 0 ? at::empty({s.B, s.next_tokens(), s.next_features()}, summed_codes.options())
                             : at::empty({0}, summed_codes.options());
  BsqUpdateParams u{};
  u.bits = b.const_data_ptr<int64_t>();
  u.B = s.B, u.h = s.h, u.w = s.w, u.D = s.D, u.d = s.d, u.hv = s.hv, u.wv = s.wv;
  u.patchify = patchify;
  u.code = bsq::code_value(s.d);
  u.summed = summed_codes.mutable_data_ptr<float>();
  u.ss = strides_of(summed_codes);
  u.H = s.H, u.W = s.W;
  u.status = status.has_value() ? status->mutable_data_ptr<int>() : nullptr;
  u.fused = fused;
  BsqNextParams n{};
  n.summed = u.summed;
  n.ss = u.ss;
  n.B = s.B, n.d = s.d, n.H = s.H, n.W = s.W, n.nh = s.nh, n.nw = s.nw;
  n.patchify = patchify;
  n.next = s.nh > 0 ? next.mutable_data_ptr<float>() : nullptr;
  n.fused = fused;
  run_bsq_scale_update(u, n, plan_bsq(u, n, device_limits(summed_codes.device())), stream);
  return next;
}

}  // namespace
}  // namespace var_fast::bsq_cuda

TORCH_LIBRARY_IMPL(VAR_FAST_KERNEL_NAMESPACE, VAR_FAST_KERNEL_DISPATCH_KEY, m) {
  m.impl("bsq_scale_update", &var_fast::bsq_cuda::bsq_scale_update_on_device);
}

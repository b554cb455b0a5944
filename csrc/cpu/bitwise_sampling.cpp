// sample_bits / sample_cfg_bits on CPU: groups of 4 bits spread over at::parallel_for, each drawn by
// sample_group() of var_fast/bitwise_sampling.cuh (the CUDA kernel's code, so both devices draw the same
// bits; semantics there).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <atomic>
#include <cstdint>
#include <optional>

#include "var_fast/bitwise_sampling.cuh"
#include "var_fast/check.h"
#include "var_fast/status_flags.h"

namespace var_fast {
namespace {
using namespace bitwise_sampling;

at::Tensor sample_bits_cpu(const char* op, const at::Tensor& logits, bool cfg, double cfg_scale, double tau,
                           int64_t top_k, double top_p, int64_t seed, int64_t image_offset,
                           const std::optional<at::Tensor>& status) {
  VF_CHECK_DEVICE(logits, at::Device(at::kCPU));
  int64_t B = 0;
  BitsParams p = plan_bits(op, logits, cfg, cfg_scale, tau, top_k, top_p, seed, image_offset, B);
  if (status.has_value()) status::check_status_tensor(op, *status, logits.device());
  auto out = at::empty({B, p.L, p.D}, logits.options().dtype(at::kLong));
  if (p.groups == 0) return out;
  p.out = out.mutable_data_ptr<int64_t>();
  std::atomic<int> bad_flags{0};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "sample_bits_cpu", [&] {
    at::parallel_for(0, p.groups, 4096, [&](int64_t begin, int64_t end) {
      int flags = 0;
      if (cfg) {
        for (int64_t g = begin; g < end; ++g) flags |= sample_group<scalar_t, true>(p, g);
      } else {
        for (int64_t g = begin; g < end; ++g) flags |= sample_group<scalar_t, false>(p, g);
      }
      if (flags != 0) bad_flags.fetch_or(flags);
    });
  });
  const int flags = status_flags(cfg, bad_flags.load());
  if (status.has_value()) {
    if (flags != 0) *status->mutable_data_ptr<int>() |= flags;
  } else if (flags != 0) {
    status::raise_for_flags(flags, 0);
  }
  return out;
}

}  // namespace
}  // namespace var_fast

TORCH_LIBRARY_IMPL(var_fast, CPU, m) {
  using namespace var_fast::bitwise_sampling;
  m.impl("sample_bits", &sample_bits_op<&var_fast::sample_bits_cpu>);
  m.impl("sample_cfg_bits", &sample_cfg_bits_op<&var_fast::sample_bits_cpu>);
}

// nearest_code on the kernel device: checks, allocation and the launch plans of the fused distance +
// arg-min kernels (var_fast/quant.cuh, plans in var_fast/quant_launch.h).
// Same exactness argument as the CPU op (csrc/cpu/quant_nearest_code.cpp): the reference formula's
// rounding in float32 (FMA chain over the channels), a certification of every row against any summation
// order, exact double distances for the rows that fail it, and the reference formula itself (same ATen
// ops and shapes, so the device BLAS's own rounding) for the rare rows still undecided.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cstdint>
#include <limits>

#include "var_fast/check.h"
#include "var_fast/kernel_device.h"
#include "var_fast/quant_cpu.h"
#include "var_fast/quant_device_ops.h"
#include "var_fast/quant_launch.h"

namespace var_fast::quant_cuda {

PreparedCodebook prepare_codebook_f32(const at::Tensor& codebook) {
  TORCH_CHECK(codebook.size(0) <= std::numeric_limits<int32_t>::max(), "nearest_code: codebook has too many codes (",
              codebook.size(0), ")");
  PreparedCodebook book;
  book.codes = codebook;
  book.norms = codebook.square().sum(1);         // exactly as the reference computes |e|^2
  book.sqrt_norm_max = book.norms.max().sqrt();  // max propagates NaN: then no row is certified early
  return book;
}

at::Tensor nearest_code_f32(const at::Tensor& z, const PreparedCodebook& book) {
  const int64_t N = z.size(0), C = z.size(1), V = book.codes.size(0);
  auto tokens = at::empty({N}, z.options().dtype(at::kLong));
  if (N == 0) return tokens;
  const at::Tensor zz = z.square().sum(1);  // exactly as the reference computes |z|^2

  const NearestCodeSplit split = plan_nearest_code_split(N, V, device_limits(z.device()));
  TORCH_CHECK(nearest_code_split_launchable(split), "nearest_code: too many rows or codes for one launch (N = ", N,
              ", V = ", V, ")");
  auto part_best = at::empty({split.splits, N}, z.options());
  auto part_second = at::empty({split.splits, N}, z.options());
  auto part_index = at::empty({split.splits, N}, z.options().dtype(at::kInt));
  auto uncertain = at::empty({N}, z.options().dtype(at::kBool));

  NearestCodeParams params;
  params.z = z.const_data_ptr<float>();
  params.codes = book.codes.const_data_ptr<float>();
  params.zz = zz.const_data_ptr<float>();
  params.ee = book.norms.const_data_ptr<float>();
  params.sqrt_ee_max = book.sqrt_norm_max.const_data_ptr<float>();
  params.N = N;
  params.V = V;
  params.C = C;
  params.codes_per_split = split.codes_per_split;
  params.splits = split.splits;
  params.part_best = part_best.mutable_data_ptr<float>();
  params.part_second = part_second.mutable_data_ptr<float>();
  params.part_index = part_index.mutable_data_ptr<int32_t>();
  params.tokens = tokens.mutable_data_ptr<int64_t>();
  params.uncertain = uncertain.mutable_data_ptr<bool>();
  run_nearest_code(params, plan_nearest_code(split, N), current_stream());

  if (uncertain.any().item<bool>()) {  // the one host synchronisation
    var_fast::quant::take_reference_argmin(z, zz, book.codes, book.norms, uncertain, tokens);  // the BLAS's rounding
  }
  return tokens;
}

namespace {

at::Tensor nearest_code_on_device(const at::Tensor& z, const at::Tensor& codebook) {
  VF_CHECK_KERNEL_DEVICE("nearest_code", z);
  var_fast::quant::check_nearest_code_args(z, codebook);
  const KernelDeviceGuard guard(z.device());
  TORCH_CHECK(!stream_is_capturing(current_stream()), "nearest_code: cannot run under CUDA graph capture: it "
              "waits for the device once (to know which rows need the reference's fallback)");
  if (z.size(0) == 0) return at::empty({0}, z.options().dtype(at::kLong));
  // float32 math for every input dtype: the distances (and their near-ties) are those of the reference.
  return nearest_code_f32(z.to(at::kFloat).contiguous(), prepare_codebook_f32(codebook.to(at::kFloat).contiguous()));
}

}  // namespace
}  // namespace var_fast::quant_cuda

TORCH_LIBRARY_IMPL(VAR_FAST_KERNEL_NAMESPACE, VAR_FAST_KERNEL_DISPATCH_KEY, m) {
  m.impl("nearest_code", &var_fast::quant_cuda::nearest_code_on_device);
}

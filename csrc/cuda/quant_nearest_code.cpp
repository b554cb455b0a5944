// nearest_code on CUDA: launchers of the fused distance + arg-min kernels of var_fast/quant.cuh.
// Same exactness argument as the CPU op (csrc/cpu/quant_nearest_code.cpp): the reference formula's
// rounding in float32 (FMA chain over the channels), a certification of every row against any summation
// order, exact double distances for the rows that fail it, and the reference formula itself (same ATen
// ops and shapes, so cuBLAS's own rounding) for the rare rows still undecided.
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>

#include "var_fast/check.h"
#include "var_fast/quant.cuh"

namespace var_fast::quant_cuda {

PreparedCodebook prepare_codebook_f32(const at::Tensor& codebook) {
  TORCH_CHECK(codebook.size(0) <= std::numeric_limits<int32_t>::max(), "nearest_code: codebook has too many codes (",
              codebook.size(0), ")");
  PreparedCodebook book;
  book.codes = codebook;
  book.norms = codebook.square().sum(1);  // exactly as the reference computes |e|^2
  book.sqrt_norm_max = book.norms.max().sqrt();  // max propagates NaN: then no row is certified early
  return book;
}

at::Tensor nearest_code_f32(const at::Tensor& z, const PreparedCodebook& book) {
  const int64_t N = z.size(0), C = z.size(1), V = book.codes.size(0);
  auto tokens = at::empty({N}, z.options().dtype(at::kLong));
  if (N == 0) return tokens;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const at::Tensor zz = z.square().sum(1);  // exactly as the reference computes |z|^2

  // Split the codes across grid.y when there are too few row tiles to fill the GPU.
  const int64_t row_tiles = (N + kNcRows - 1) / kNcRows, code_tiles = (V + kNcCodes - 1) / kNcCodes;
  const int64_t target_blocks = 2 * at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int64_t wanted = std::clamp<int64_t>((target_blocks + row_tiles - 1) / row_tiles, 1, code_tiles);
  const int64_t codes_per_split = (code_tiles + wanted - 1) / wanted * kNcCodes;
  const int64_t splits = (V + codes_per_split - 1) / codes_per_split;
  TORCH_CHECK(row_tiles <= std::numeric_limits<int32_t>::max() && splits <= 65535,
              "nearest_code: too many rows or codes for one launch (N = ", N, ", V = ", V, ")");
  auto part_best = at::empty({splits, N}, z.options());
  auto part_second = at::empty({splits, N}, z.options());
  auto part_index = at::empty({splits, N}, z.options().dtype(at::kInt));
  auto uncertain = at::empty({N}, z.options().dtype(at::kBool));

  nearest_code_partial_kernel<<<dim3(static_cast<unsigned>(row_tiles), static_cast<unsigned>(splits)), kNcThreads, 0,
                                stream>>>(z.const_data_ptr<float>(), book.codes.const_data_ptr<float>(),
                                          zz.const_data_ptr<float>(), book.norms.const_data_ptr<float>(), N, V, C,
                                          codes_per_split, part_best.mutable_data_ptr<float>(),
                                          part_second.mutable_data_ptr<float>(), part_index.mutable_data_ptr<int32_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  constexpr int threads = 256;
  nearest_code_merge_kernel<<<static_cast<unsigned>((N + threads - 1) / threads), threads, 0, stream>>>(
      part_best.const_data_ptr<float>(), part_second.const_data_ptr<float>(), part_index.const_data_ptr<int32_t>(),
      splits, N, V, C, zz.const_data_ptr<float>(), book.sqrt_norm_max.const_data_ptr<float>(),
      tokens.mutable_data_ptr<int64_t>(), uncertain.mutable_data_ptr<bool>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  constexpr int rows_per_block = threads / kWarpSize;
  nearest_code_refine_kernel<<<static_cast<unsigned>((N + rows_per_block - 1) / rows_per_block), threads, 0,
                               stream>>>(z.const_data_ptr<float>(), book.codes.const_data_ptr<float>(),
                                         zz.const_data_ptr<float>(), book.norms.const_data_ptr<float>(), N, V, C,
                                         tokens.mutable_data_ptr<int64_t>(), uncertain.mutable_data_ptr<bool>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  if (uncertain.any().item<bool>()) {
    var_fast::quant::take_reference_argmin(z, zz, book.codes, book.norms, uncertain, tokens);  // cuBLAS's rounding
  }
  return tokens;
}

namespace {

at::Tensor nearest_code_cuda(const at::Tensor& z, const at::Tensor& codebook) {
  TORCH_CHECK(z.is_cuda(), "nearest_code: z must be a CUDA tensor, got ", z.device());
  var_fast::quant::check_nearest_code_args(z, codebook);
  const c10::cuda::CUDAGuard guard(z.device());
  if (z.size(0) == 0) return at::empty({0}, z.options().dtype(at::kLong));
  // float32 math for every input dtype: the distances (and their near-ties) are those of the reference.
  return nearest_code_f32(z.to(at::kFloat).contiguous(), prepare_codebook_f32(codebook.to(at::kFloat).contiguous()));
}

}  // namespace
}  // namespace var_fast::quant_cuda

TORCH_LIBRARY_IMPL(var_fast, CUDA, m) { m.impl("nearest_code", &var_fast::quant_cuda::nearest_code_cuda); }

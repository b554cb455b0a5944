// Errors found on the device, reported without a host round trip: the sampling op and the quantizer's
// sampler step OR flags into a caller-provided int32 `status` tensor of one element, and the caller
// checks it once (op check_status), e.g. after the last scale of a batch, with the messages the ops
// would have raised themselves.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>

namespace var_fast::status {

constexpr int kSampleNaN = 1;          // logits (or the CFG mix) contain NaN
constexpr int kSamplePosInf = 2;       // ... +inf
constexpr int kSampleAllNegInf = 4;    // a row is all -inf
constexpr int kSampleCfg = 8;          // the flags above came from sample_cfg_top_k_top_p
constexpr int kTokenOutOfRange = 16;   // quant_sampler_step got a token outside [0, V)

// The sampling flags above came from sample_bits (or, with kSampleCfg, sample_cfg_bits): a pair of bit logits.
constexpr int kSampleBits = 256;

// `status` must be an int32 tensor of one element on `device`.
inline void check_status_tensor(const char* op, const at::Tensor& status, const at::Device& device) {
  TORCH_CHECK(status.scalar_type() == at::kInt && status.numel() == 1 && status.is_contiguous(), op,
              ": status must be a contiguous int32 tensor of one element, got ", status.scalar_type(), " of shape ",
              status.sizes());
  TORCH_CHECK(status.device() == device, op, ": status must be on ", device, ", got ", status.device());
}

// The error of the flags, as the op that set them would have raised it.
inline void raise_for_flags(int flags, int64_t vocab_size) {
  const bool cfg = flags & kSampleCfg;
  const bool bits = flags & kSampleBits;
  const char* op = bits ? (cfg ? "sample_cfg_bits" : "sample_bits") : (cfg ? "sample_cfg_top_k_top_p" : "sample_top_k_top_p");
  const char* where = !cfg ? (bits ? " (after 1 / tau)" : "")
                           : (bits ? " (in the mixed logits cfg*cond + (1-cfg)*uncond after 1 / tau)"
                                   : " (in the mixed logits (1+g)*cond - g*uncond)");
  const char* row = bits ? "a pair of bit logits" : "a row of logits";
  TORCH_CHECK(!(flags & kSampleNaN), op, ": logits contain NaN", where);
  TORCH_CHECK(!(flags & kSamplePosInf), op, ": logits contain +inf", where);
  TORCH_CHECK(!(flags & kSampleAllNegInf), op, ": ", row, " is all -inf", where, ": nothing can be sampled");
  TORCH_CHECK(!(flags & kTokenOutOfRange),
              "quant_sampler_step: token out of range: tokens must lie in [0, V) with V = ", vocab_size);
}

// The check_status op: one read of the flags (a device-to-host copy for CUDA tensors).
inline void check_status_op(const at::Tensor& status, int64_t vocab_size) {
  check_status_tensor("check_status", status, status.device());
  raise_for_flags(status.item<int>(), vocab_size);
}

}  // namespace var_fast::status

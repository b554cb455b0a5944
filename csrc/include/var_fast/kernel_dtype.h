// The one switch from a launcher's DType to a kernel's element type, shared by every kernel translation
// unit (csrc/cuda/*_kernels.cu): f(T{}) is called with a value of the element type, so a generic lambda
// instantiates the kernel for it (`[&](auto zero) { run<decltype(zero)>(...); }`).
#pragma once
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

#include "var_fast/launch_plan.h"

namespace var_fast {

// float32, float16 and bfloat16; float64 is refused (its launchers' checks accept the three only, so the
// refusal is a guard against a caller that skips them, not a user-facing error).
template <class F>
void with_kernel_dtype(DType dtype, const char* op, F&& f) {
  switch (dtype) {
    case DType::Float: return f(float{});
    case DType::Half: return f(c10::Half{});
    case DType::BFloat16: return f(c10::BFloat16{});
    case DType::Double: break;
  }
  TORCH_CHECK(false, op, ": no kernel for float64");
}

// The same with float64 instantiated too (ops whose CPU reference dtype float64 also runs on the GPU).
template <class F>
void with_kernel_dtype_or_double(DType dtype, F&& f) {
  switch (dtype) {
    case DType::Float: return f(float{});
    case DType::Half: return f(c10::Half{});
    case DType::BFloat16: return f(c10::BFloat16{});
    case DType::Double: return f(double{});
  }
}

}  // namespace var_fast

// Kernel translation unit of adaln_modulate and gated_residual: the kernels of var_fast/adaln.cuh
// launched by their plans (var_fast/adaln_launch.h). nvcc compiles it for the GPU; tests/emu compiles
// the same file for the CUDA emulator.
#include "var_fast/launch.cuh"
#include "var_fast/kernel_dtype.h"

#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

#include "var_fast/adaln.cuh"
#include "var_fast/adaln_launch.h"

namespace var_fast::adaln {
namespace {

// Elements per 16-byte pack of the vectorized variants: the plans' pack_elements.
template <typename T>
constexpr int kPack = 16 / sizeof(T);
static_assert(kPack<float> == pack_elements(DType::Float) && kPack<c10::Half> == pack_elements(DType::Half) &&
              kPack<c10::BFloat16> == pack_elements(DType::BFloat16));

template <typename T>
void run_modulate_typed(const ModulateParams& p, const LaunchPlan& plan, Stream stream) {
  constexpr int kVec = kPack<T>;
  const auto* x = static_cast<const T*>(p.x);
  const auto* scale = static_cast<const T*>(p.scale);
  const auto* shift = static_cast<const T*>(p.shift);
  auto* y = static_cast<T*>(p.y);
  if (p.vectorized) {
    launch(adaln_modulate_kernel<T, kVec>, plan, stream, x, scale, p.scale_stride_b, shift, p.shift_stride_b, y,
           p.rows, p.L, p.C, p.eps);
  } else {
    launch(adaln_modulate_kernel<T, 1>, plan, stream, x, scale, p.scale_stride_b, shift, p.shift_stride_b, y,
           p.rows, p.L, p.C, p.eps);
  }
}

template <typename T, int VEC>
void launch_gated_residual(const GatedResidualParams& p, const LaunchPlan& plan, Stream stream) {
  launch(gated_residual_kernel<T, VEC>, plan, stream, static_cast<const T*>(p.x), static_cast<const T*>(p.y),
         static_cast<const T*>(p.gamma), p.gamma_stride_b, static_cast<T*>(p.out), p.numel / VEC, p.C / VEC, p.L);
}

template <typename T>
void run_gated_typed(const GatedResidualParams& p, const LaunchPlan& plan, Stream stream) {
  if (p.vectorized) {
    launch_gated_residual<T, kPack<T>>(p, plan, stream);
  } else {
    launch_gated_residual<T, 1>(p, plan, stream);
  }
}

}  // namespace

void run_adaln_modulate(const ModulateParams& params, DType dtype, const LaunchPlan& plan, Stream stream) {
  with_kernel_dtype(dtype, "adaln_modulate", [&](auto zero) { run_modulate_typed<decltype(zero)>(params, plan, stream); });
}

void run_gated_residual(const GatedResidualParams& params, DType dtype, const LaunchPlan& plan, Stream stream) {
  with_kernel_dtype(dtype, "gated_residual", [&](auto zero) { run_gated_typed<decltype(zero)>(params, plan, stream); });
}

}  // namespace var_fast::adaln

// The device side of the torch-facing launchers (csrc/cuda/*.cpp), for the two builds they are part of:
//  * the CUDA build: CUDA tensors, a device guard, the current stream, limits read once per device;
//  * the emulated build (VAR_FAST_EMULATED, tests/emu): CPU tensors and ops in the `var_fast_emu`
//    namespace; kernels run on the host through the CUDA emulator, on an H100-like device.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>

#include "var_fast/launch_plan.h"

#if defined(VAR_FAST_EMULATED)
#include <cstdlib>

#define VAR_FAST_KERNEL_NAMESPACE var_fast_emu
#define VAR_FAST_KERNEL_DISPATCH_KEY CPU

namespace var_fast {

constexpr const char* kKernelDeviceName = "CPU (emulated CUDA)";
inline bool on_kernel_device(const at::Tensor& t) { return t.is_cpu(); }

struct KernelDeviceGuard {
  explicit KernelDeviceGuard(const at::Device&) {}
};

inline Stream current_stream() { return nullptr; }
inline bool stream_is_capturing(Stream) { return false; }

// H100/H200: compute capability 9.0, 132 SMs, 227 KiB of opt-in shared memory (CUEMU_SMEM_OPTIN overrides).
inline const DeviceLimits& device_limits(const at::Device&) {
  static const DeviceLimits limits = [] {
    DeviceLimits l;
    l.cc_major = 9;
    l.cc_minor = 0;
    l.sm_count = 132;
    l.smem_optin = 232448;
    if (const char* s = std::getenv("CUEMU_SMEM_OPTIN")) l.smem_optin = std::strtoull(s, nullptr, 10);
    return l;
  }();
  return limits;
}

// Device memory is host memory: the value is there once the (synchronous) launch returned.
inline int read_device_int(const int* p, Stream) { return *p; }

}  // namespace var_fast

#else
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#define VAR_FAST_KERNEL_NAMESPACE var_fast
#define VAR_FAST_KERNEL_DISPATCH_KEY CUDA

namespace var_fast {

constexpr const char* kKernelDeviceName = "CUDA";
inline bool on_kernel_device(const at::Tensor& t) { return t.is_cuda(); }

using KernelDeviceGuard = c10::cuda::CUDAGuard;

inline Stream current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }
bool stream_is_capturing(Stream stream);

// Read with cudaDeviceGetAttribute once per device, then cached.
const DeviceLimits& device_limits(const at::Device& device);

// Copies one int from the device and waits for the stream (a host synchronisation).
int read_device_int(const int* p, Stream stream);

}  // namespace var_fast
#endif

namespace var_fast {

// The run functions' element type of a tensor the launcher has already checked to be floating.
inline DType kernel_dtype(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kHalf: return DType::Half;
    case at::kBFloat16: return DType::BFloat16;
    case at::kDouble: return DType::Double;
    case at::kFloat: return DType::Float;
    default: TORCH_CHECK(false, "var_fast kernels: unsupported dtype ", t.scalar_type());
  }
}

}  // namespace var_fast

// `x` must be on the kernels' device (CUDA, or the CPU for the emulated kernels); `op` names the op.
#define VF_CHECK_KERNEL_DEVICE(op, x)                                                                   \
  TORCH_CHECK(::var_fast::on_kernel_device(x), op, ": " #x " must be a ", ::var_fast::kKernelDeviceName, \
              " tensor, got ", (x).device())

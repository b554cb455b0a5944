// The device side of the torch-facing launchers (csrc/cuda/*.cpp), for the two builds they are part of:
//  * the CUDA build: CUDA tensors, a device guard, the current stream, limits read once per device;
//  * the emulated build (VAR_FAST_EMULATED, tests/emu): CPU tensors and ops in the `var_fast_emu`
//    namespace; kernels run on the host through the CUDA emulator, on the GPU var_fast/emulated_device.h
//    describes (an H100 unless a test sets another).
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>

#include "var_fast/launch_plan.h"

#if defined(VAR_FAST_EMULATED)
#include "var_fast/emulated_device.h"

#define VAR_FAST_KERNEL_NAMESPACE var_fast_emu
#define VAR_FAST_KERNEL_DISPATCH_KEY CPU

namespace var_fast {

constexpr const char* kKernelDeviceName = "CPU (emulated CUDA)";
inline bool on_kernel_device(const at::Tensor& t) { return t.is_cpu(); }

struct KernelDeviceGuard {
  explicit KernelDeviceGuard(const at::Device&) {}
};

inline Stream current_stream() { return nullptr; }
// True between torch.ops.cuemu.begin_capture() and end_capture() (var_fast/emulated_device.h).
inline bool stream_is_capturing(Stream) { return emulated::capturing(); }

// An H100 unless a test describes another GPU (var_fast/emulated_device.h).
inline const DeviceLimits& device_limits(const at::Device&) { return emulated::device(); }

// Device memory is host memory: the value is there once the (synchronous) launch returned. Under an
// emulated capture this is the error a real capture gives (a host synchronisation).
inline int read_device_int(const int* p, Stream stream) {
  TORCH_CHECK(!stream_is_capturing(stream), "emulated CUDA graph capture: a device-to-host read (a stream "
              "synchronisation) during capture; a real capture fails here (cudaErrorStreamCaptureUnsupported)");
  return *p;
}

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

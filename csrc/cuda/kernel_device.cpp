// CUDA side of var_fast/kernel_device.h and var_fast/launch.cuh: per-device limits and per-kernel shared
// memory opt-ins, each asked of the driver once instead of at every launch.
// Not part of the emulated build (tests/emu), which has its own definitions in the header.
#if !defined(VAR_FAST_EMULATED)
#include "var_fast/kernel_device.h"

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <cuda_runtime.h>

#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <vector>

namespace var_fast {

const DeviceLimits& device_limits(const at::Device& device) {
  static std::mutex mutex;
  static std::vector<std::unique_ptr<DeviceLimits>> cache;  // by device index; entries never move
  const int index = device.has_index() ? device.index() : c10::cuda::current_device();
  const std::lock_guard<std::mutex> lock(mutex);
  if (static_cast<size_t>(index) >= cache.size()) cache.resize(index + 1);
  if (!cache[index]) {
    auto attribute = [index](cudaDeviceAttr attr) {
      int value = 0;
      C10_CUDA_CHECK(cudaDeviceGetAttribute(&value, attr, index));
      return value;
    };
    auto limits = std::make_unique<DeviceLimits>();
    limits->cc_major = attribute(cudaDevAttrComputeCapabilityMajor);
    limits->cc_minor = attribute(cudaDevAttrComputeCapabilityMinor);
    limits->sm_count = attribute(cudaDevAttrMultiProcessorCount);
    limits->smem_optin = static_cast<size_t>(attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin));
    cache[index] = std::move(limits);
  }
  return *cache[index];
}

bool stream_is_capturing(Stream stream) {
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  C10_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
  return capture != cudaStreamCaptureStatusNone;
}

int read_device_int(const int* p, Stream stream) {
  int value = 0;
  C10_CUDA_CHECK(cudaMemcpyAsync(&value, p, sizeof(int), cudaMemcpyDeviceToHost, stream));
  C10_CUDA_CHECK(cudaStreamSynchronize(stream));
  return value;
}

void allow_dynamic_smem(const void* kernel, size_t bytes) {
  static std::mutex mutex;
  static std::map<std::pair<const void*, int>, size_t> granted;  // (kernel, device) -> bytes set
  int device = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  const std::lock_guard<std::mutex> lock(mutex);
  size_t& have = granted[{kernel, device}];
  if (have >= bytes) return;
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  have = bytes;
}

}  // namespace var_fast
#endif  // !VAR_FAST_EMULATED

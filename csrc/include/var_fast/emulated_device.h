// The GPU of the emulated build (tests/emu, VAR_FAST_EMULATED), shared by the launchers (kernel_device.h),
// the kernel translation units (launch.cuh) and the test library (tests/emu/emu_library.cpp):
//  * its description (SMs, compute capability, opt-in shared memory), which the launch plans read: an
//    H100 unless a test describes another GPU (torch.ops.cuemu.set_device);
//  * a CUDA graph capture state: while "capturing", stream_is_capturing() is true, a device-to-host read
//    raises, and host synchronisations the test library observes are reported when the capture ends;
//  * a record of the launches (kernel, grid, block, shared memory), so a test can tell which branch of a
//    launch plan a call took.
// Nothing here is part of the CUDA build.
#pragma once
#if !defined(VAR_FAST_EMULATED)
#error "var_fast/emulated_device.h belongs to the emulated build (tests/emu) only"
#endif
#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#include "var_fast/launch_plan.h"

namespace var_fast::emulated {

struct Launch {
  const void* kernel;
  LaunchPlan plan;
};

inline DeviceLimits h100();

struct State {
  std::mutex mutex;
  DeviceLimits device = h100();
  bool capturing = false;
  std::vector<std::string> capture_violations;  // what would have failed a real capture
  bool recording = false;
  std::vector<Launch> launches;
};

// H100/H200: compute capability 9.0, 132 SMs, 227 KiB of opt-in shared memory (CUEMU_SMEM_OPTIN overrides).
inline DeviceLimits h100() {
  DeviceLimits d;
  d.cc_major = 9;
  d.cc_minor = 0;
  d.sm_count = 132;
  d.smem_optin = 232448;
  if (const char* s = std::getenv("CUEMU_SMEM_OPTIN")) d.smem_optin = std::strtoull(s, nullptr, 10);
  return d;
}

inline State& state() {
  static State s;
  return s;
}

// Launch plans read the description when they are computed; tests change it between calls only.
inline const DeviceLimits& device() { return state().device; }

inline bool capturing() {
  const std::lock_guard<std::mutex> lock(state().mutex);
  return state().capturing;
}

inline void record_launch(const void* kernel, const LaunchPlan& plan) {
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  if (s.recording) s.launches.push_back(Launch{kernel, plan});
}

}  // namespace var_fast::emulated

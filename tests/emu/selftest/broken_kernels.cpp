// Self-test of the CUDA emulator (tests/emu/cuemu/cuda_emu.h): each case launches one deliberately
// broken kernel through cuemu::launch and prints what the emulator (or the sanitizer it runs under)
// says; `correct_reduction` is the positive control. Exit status: 0 when the launch succeeded and the
// result is right, 1 otherwise. tests/emu/test_emulator.py builds it plain, with TSan and with ASan+UBSan.
//
//   broken_kernels <case>      (g++ -std=c++20 -DCUEMU_NO_TORCH -include cuda_emu.h ..., torch-free)
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

CUEMU_DYNAMIC_SHARED(selftest, float, dyn)  // storage of the kernels' `extern __shared__ float dyn[]`

namespace selftest {

int report(const char* name, cudaError_t err) {
  if (err != cudaSuccess) {
    std::printf("%s: launch failed: %s\n", name, cuemu::g_last_error.c_str());
    return 1;
  }
  std::printf("%s: launch succeeded\n", name);
  return 0;
}

// ---- (a) a barrier inside divergent code: the two halves of the block wait at different lines --------
__global__ void divergent_barrier_kernel(int* out) {
  if (threadIdx.x < 64) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}

int divergent_barrier() {
  std::vector<int> out(256);
  return report("divergent_barrier", cuemu::launch(divergent_barrier_kernel, dim3(1), dim3(256), 0, out.data()));
}

// ---- (b) a missing __syncthreads: thread t reads the shared word thread t+32 writes -------------------
// Without a barrier between the write and the read nothing orders them; TSan sees two CUDA threads
// (fibers) touch the same shared-memory word with no happens-before edge.
int* g_race_shared = nullptr;  // where the kernel's __shared__ array lives (for the test's address check)

__global__ void missing_syncthreads_kernel(int* out) {
  __shared__ int s[256];
  if (threadIdx.x == 0) g_race_shared = s;
  s[threadIdx.x] = static_cast<int>(threadIdx.x);
  // a __syncthreads() belongs here
  out[threadIdx.x] = s[(threadIdx.x + 32) % blockDim.x];
}

int missing_syncthreads() {
  std::vector<int> out(256);
  const int rc = report("missing_syncthreads",
                        cuemu::launch(missing_syncthreads_kernel, dim3(1), dim3(256), 0, out.data()));
  std::printf("shared array: [%p, %p)\n", static_cast<void*>(g_race_shared), static_cast<void*>(g_race_shared + 256));
  return rc;
}

// ---- (c) a full-warp shuffle after some lanes returned -------------------------------------------------
// The barrier makes the early return happen before the shuffle in every thread order (exited threads
// count as arrived at a block barrier, as on sm_70+).
__global__ void shuffle_after_exit_kernel(const float* x, int n, float* out) {
  if (static_cast<int>(threadIdx.x) >= n) return;
  float v = x[threadIdx.x];
  __syncthreads();
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  if (threadIdx.x == 0) *out = v;
}

int shuffle_after_exit() {
  std::vector<float> x(32, 1.0f);
  float out = 0;
  return report("shuffle_after_exit",
                cuemu::launch(shuffle_after_exit_kernel, dim3(1), dim3(32), 0, x.data(), 20, &out));
}

// ---- (d) dynamic shared memory above 48 KiB, without / with cudaFuncSetAttribute -------------------------
constexpr size_t kBigSmem = 64 * 1024;

__global__ void big_smem_kernel(float* out) {
  extern __shared__ float dyn[];
  const int n = static_cast<int>(kBigSmem / sizeof(float));
  for (int i = threadIdx.x; i < n; i += blockDim.x) dyn[i] = static_cast<float>(i);
  __syncthreads();
  if (threadIdx.x == 0) *out = dyn[n - 1];
}

int smem_without_optin() {
  float out = 0;
  return report("smem_without_optin", cuemu::launch(big_smem_kernel, dim3(1), dim3(128), kBigSmem, &out));
}

int smem_with_optin() {
  float out = 0;
  if (cuemu::set_max_dynamic_smem(big_smem_kernel, kBigSmem) != cudaSuccess) {
    std::printf("smem_with_optin: set_max_dynamic_smem refused %zu bytes\n", kBigSmem);
    return 1;
  }
  const int rc = report("smem_with_optin", cuemu::launch(big_smem_kernel, dim3(1), dim3(128), kBigSmem, &out));
  const float want = static_cast<float>(kBigSmem / sizeof(float) - 1);
  if (rc == 0 && out != want) {
    std::printf("smem_with_optin: wrong result %g, want %g\n", out, want);
    return 1;
  }
  return rc;
}

// ---- (e) a global write one element past the end of a heap buffer --------------------------------------
__global__ void write_n_kernel(int* out, int n) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) out[i] = i;  // the caller's buffer holds n - 1 elements
}

int out_of_bounds_write() {
  const int n = 100;
#if defined(__SANITIZE_ADDRESS__)
  // Exactly n - 1 elements: AddressSanitizer names the write "heap-buffer-overflow".
  int* buf = new int[n - 1];
  const cudaError_t err = cuemu::launch(write_n_kernel, dim3(4), dim3(32), 0, buf, n);
  delete[] buf;
  return report("out_of_bounds_write", err);
#else
  // Without ASan: one guard element past the n - 1 usable ones, checked after the launch.
  constexpr int kGuard = 0x5eed5eed;
  std::vector<int> buf(n, 0);
  buf[n - 1] = kGuard;
  const int rc = report("out_of_bounds_write", cuemu::launch(write_n_kernel, dim3(4), dim3(32), 0, buf.data(), n));
  if (buf[n - 1] != kGuard) {
    std::printf("out_of_bounds_write: global write past the end of the buffer (guard element %d overwritten)\n", n - 1);
    return 1;
  }
  return rc;
#endif
}

// ---- a deadlock: half a warp waits in a shuffle, the other half at a block barrier -------------------------
__global__ void deadlock_kernel(int* out) {
  if (threadIdx.x % 32 < 16) {
    out[threadIdx.x] = __shfl_sync(0xffffffffu, 1, 0);
  } else {
    __syncthreads();
  }
}

int deadlock() {
  std::vector<int> out(64);
  return report("deadlock", cuemu::launch(deadlock_kernel, dim3(1), dim3(64), 0, out.data()));
}

// ---- (f) positive control: shuffles, shared memory, __syncthreads_or, atomics -----------------------------
__global__ void reduce_kernel(const float* x, int n, float* sum, int* flag) {
  __shared__ float partial[32];
  float v = 0.f;
  for (int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x); i < n; i += blockDim.x * gridDim.x) v += x[i];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x < 32) {
    v = threadIdx.x < blockDim.x / 32 ? partial[threadIdx.x] : 0.f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (threadIdx.x == 0) atomicAdd(sum, v);
  }
  const int any = __syncthreads_or(threadIdx.x == 77);
  if (threadIdx.x == 0 && any) atomicOr(flag, 1 << blockIdx.x);
}

int correct_reduction() {
  const int n = 20000, blocks = 4;
  std::vector<float> x(n);
  double want = 0;
  for (int i = 0; i < n; ++i) {
    x[i] = static_cast<float>(i % 7) * 0.25f;  // sums of quarters: exact in float in any order
    want += x[i];
  }
  float sum = 0;
  int flag = 0;
  int rc = report("correct_reduction", cuemu::launch(reduce_kernel, dim3(blocks), dim3(256), 0, x.data(), n, &sum, &flag));
  if (sum != static_cast<float>(want) || flag != (1 << blocks) - 1) {
    std::printf("correct_reduction: sum %g (want %g), flag %#x (want %#x)\n", sum, want, flag, (1 << blocks) - 1);
    rc = 1;
  }
  return rc;
}

struct Case {
  const char* name;
  int (*run)();
};
constexpr Case kCases[] = {
    {"divergent_barrier", divergent_barrier},   {"missing_syncthreads", missing_syncthreads},
    {"shuffle_after_exit", shuffle_after_exit}, {"smem_without_optin", smem_without_optin},
    {"smem_with_optin", smem_with_optin},       {"out_of_bounds_write", out_of_bounds_write},
    {"deadlock", deadlock},                     {"correct_reduction", correct_reduction},
};

}  // namespace selftest

int main(int argc, char** argv) {
  using selftest::Case, selftest::kCases;
  if (argc == 2) {
    for (const Case& c : kCases)
      if (std::strcmp(argv[1], c.name) == 0) {
        const int rc = c.run();
        std::fflush(stdout);
        return rc;
      }
  }
  std::fprintf(stderr, "usage: %s <case>; cases:", argv[0]);
  for (const Case& c : kCases) std::fprintf(stderr, " %s", c.name);
  std::fprintf(stderr, "\n");
  return 2;
}

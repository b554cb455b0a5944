// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11), the same
// function on the host and on the device, so that CPU and CUDA kernels draw identical numbers.
// Known-answer vectors (Random123 kat_vectors) are checked in tests/test_sampling.py against the
// Python copy in var_fast/reference/sampling.py, which the ops' draws are compared with.
#pragma once
#include <cstdint>

#ifndef VAR_FAST_HOST_DEVICE
#if defined(__CUDACC__)
#define VAR_FAST_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define VAR_FAST_HOST_DEVICE inline
#endif
#endif

namespace var_fast {

struct Philox4x32 {
  uint32_t v[4];
};

namespace philox_detail {
constexpr uint32_t kMul0 = 0xD2511F53u;
constexpr uint32_t kMul1 = 0xCD9E8D57u;
constexpr uint32_t kWeyl0 = 0x9E3779B9u;  // golden ratio
constexpr uint32_t kWeyl1 = 0xBB67AE85u;  // sqrt(3) - 1

VAR_FAST_HOST_DEVICE uint32_t mulhi32(uint32_t a, uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __umulhi(a, b);
#else
  return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
#endif
}
}  // namespace philox_detail

// Ten rounds of Philox4x32 on `counter` under `key`; the key is bumped between rounds.
VAR_FAST_HOST_DEVICE Philox4x32 philox4x32_10(Philox4x32 counter, uint32_t key0, uint32_t key1) {
  using namespace philox_detail;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int round = 0; round < 10; ++round) {
    const uint32_t hi0 = mulhi32(kMul0, counter.v[0]), lo0 = kMul0 * counter.v[0];
    const uint32_t hi1 = mulhi32(kMul1, counter.v[2]), lo1 = kMul1 * counter.v[2];
    counter = Philox4x32{{hi1 ^ counter.v[1] ^ key0, lo1, hi0 ^ counter.v[3] ^ key1, lo0}};
    key0 += kWeyl0;
    key1 += kWeyl1;
  }
  return counter;
}

// The 24 high bits of a word as a float in [0, 1): exact, and the same on every device.
VAR_FAST_HOST_DEVICE float uniform_from_bits(uint32_t bits) {
  return static_cast<float>(bits >> 8) * 5.9604644775390625e-08f;  // 2^-24
}

// The one uniform of row `row` under `seed`: key = seed split into (lo32, hi32), counter =
// (row lo32, row hi32, 0, 0), first output word.
VAR_FAST_HOST_DEVICE float philox_row_uniform(uint64_t seed, uint64_t row) {
  const Philox4x32 out = philox4x32_10(
      Philox4x32{{static_cast<uint32_t>(row), static_cast<uint32_t>(row >> 32), 0u, 0u}},
      static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  return uniform_from_bits(out.v[0]);
}

}  // namespace var_fast

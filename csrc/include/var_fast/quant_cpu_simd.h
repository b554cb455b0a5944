// Portable SIMD building blocks of the quantizer's CPU loops (csrc/cpu/quant_*.cpp; host only).
#pragma once
#include <cstdint>
#include <cstring>

// GCC/Clang on x86-64 Linux: compile the hot loops for AVX2+FMA too and pick at load time.
#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__))
#define VF_CPU_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define VF_CPU_MULTIVERSION
#endif

namespace var_fast::quant_cpu {

// GCC/Clang vector extensions: 8 floats (one AVX register in the x86-64-v3 clone, two SSE registers in
// the default one); the compiler keeps the micro-tiles' accumulators in registers.
typedef float vf8 __attribute__((vector_size(32)));
#if defined(__GNUC__) && !defined(__clang__)
// Every function taking or returning vf8 is always inlined: GCC's note on the AVX vector ABI is moot.
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
typedef int32_t vi8 __attribute__((vector_size(32)));

__attribute__((always_inline)) inline vf8 load8(const float* p) {
  vf8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
__attribute__((always_inline)) inline vi8 load8(const int32_t* p) {
  vi8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <typename V, typename T>
__attribute__((always_inline)) inline void store8(T* p, const V& v) {
  std::memcpy(p, &v, sizeof(v));
}

}  // namespace var_fast::quant_cpu

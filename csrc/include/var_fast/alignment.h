// Pointer alignment as the launchers see it: the inputs of the kernels' 16-byte (vectorized) path choice.
#pragma once
#include <cstdint>

namespace var_fast {

inline bool is_aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

}  // namespace var_fast

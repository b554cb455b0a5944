// The CPU row arithmetic of the AdaLN ops (csrc/cpu/adaln_modulate.cpp, gated_residual_adaln.cpp):
// LayerNorm statistics in float32 with eight partial sums, then the modulation. Shared so that the fused
// gated_residual_adaln gives adaln_modulate's values bit for bit.
#pragma once
#include <cmath>
#include <cstdint>

namespace var_fast::adaln_cpu {

// Eight partial sums so that the compiler can vectorize the reductions (and they round less).
constexpr int64_t kLanes = 8;

inline float sum_lanes(const float* lanes) {
  float total = 0.f;
  for (int64_t i = 0; i < kLanes; ++i) total += lanes[i];
  return total;
}

// y = (row - mean) * rstd * scale_plus_one + shift over one row of C float32 values.
template <typename scalar_t>
inline void modulate_row(const float* row, const float* scale_plus_one, const float* shift, scalar_t* y, int64_t C,
                         float eps) {
  const int64_t C_body = C - C % kLanes;
  float lanes[kLanes] = {};
  for (int64_t c = 0; c < C_body; c += kLanes)
    for (int64_t i = 0; i < kLanes; ++i) lanes[i] += row[c + i];
  float total = sum_lanes(lanes);
  for (int64_t c = C_body; c < C; ++c) total += row[c];
  const float mean = total / static_cast<float>(C);
  // Second pass over the centred values: no cancellation for rows with a large mean.
  float sq_lanes[kLanes] = {};
  for (int64_t c = 0; c < C_body; c += kLanes)
    for (int64_t i = 0; i < kLanes; ++i) {
      const float d = row[c + i] - mean;
      sq_lanes[i] += d * d;
    }
  float sq = sum_lanes(sq_lanes);
  for (int64_t c = C_body; c < C; ++c) sq += (row[c] - mean) * (row[c] - mean);
  const float rstd = 1.f / std::sqrt(sq / static_cast<float>(C) + eps);
  for (int64_t c = 0; c < C; ++c)
    y[c] = static_cast<scalar_t>((row[c] - mean) * rstd * scale_plus_one[c] + shift[c]);
}

}  // namespace var_fast::adaln_cpu

#pragma once

#include <cstdint>

namespace fastformers {

// sum_i a[i] * b[i] in 16 independent lanes (so the compiler vectorizes it without reassociating), then the tail.
inline float dot(const float* a, const float* b, int64_t n) {
  constexpr int kLanes = 16;
  float acc[kLanes] = {0};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) acc[j] += a[i + j] * b[i + j];
  float total = 0;
  for (int j = 0; j < kLanes; ++j) total += acc[j];
  for (; i < n; ++i) total += a[i] * b[i];
  return total;
}

}  // namespace fastformers

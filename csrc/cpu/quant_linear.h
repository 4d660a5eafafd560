#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace fastformers {

// A packed weight as the CPU kernels read it (checked by the binding before any kernel runs).
struct QuantView {
  const uint8_t* q;       // int8 codes (N, K) or int4 codes (N, K / 2)
  const float* scales;    // (N, groups), groups = ceil(K / G): the last group may be shorter
  const float* mins;      // (N, groups) or nullptr
  int bits;               // 8 or 4
  int64_t N, K, G;        // K and G multiples of 32
};

at::Tensor quant_linear_cpu(const at::Tensor& x2d, const QuantView& w, const c10::optional<at::Tensor>& bias);

// The instruction set the kernels run with on this CPU: "avx512", "avx2", "baseline" or "portable".
const char* selected_isa();

}  // namespace fastformers

#pragma once

#include <ATen/ATen.h>

#include <c10/util/Half.h>

#include <cstdint>

namespace fastformers {

// A packed weight as the CPU kernels read it (checked by the binding before any kernel runs).
struct QuantView {
  const uint8_t* q;       // int8 codes (N, K) or int4 codes (N, K / 2)
  const void* scales;     // (N, groups), groups = ceil(K / G): the last group may be shorter; float32, or float16
  const void* mins;       // (N, groups) of the scales' dtype, or nullptr
  int bits;               // 8 or 4
  int64_t N, K, G;        // K and G multiples of 32
  bool half = false;      // scales and mins are float16 (half the bytes to read per token when they are exact so)

  int64_t groups() const { return (K + G - 1) / G; }
  int64_t row_bytes() const { return bits == 8 ? K : K / 2; }
  // scales[i] / mins[i] as floats (the x86 kernels convert float16 with F16C instead: quant_linear.cpp's at())
  float scale(int64_t i) const { return at(scales, i); }
  float min(int64_t i) const { return at(mins, i); }
  float at(const void* p, int64_t i) const {
    return half ? c10::detail::fp16_ieee_to_fp32_value(static_cast<const uint16_t*>(p)[i])
                : static_cast<const float*>(p)[i];
  }
  // rows n0 .. n0 + count of this weight
  QuantView rows(int64_t n0, int64_t count) const {
    QuantView part = *this;
    const int64_t step = n0 * groups() * (half ? 2 : 4);
    part.q += n0 * row_bytes();
    part.scales = static_cast<const char*>(scales) + step;
    if (mins) part.mins = static_cast<const char*>(mins) + step;
    part.N = count;
    return part;
  }
};

// Shared by both kernels (float activations, quant_linear.cpp; int8 activations, quant_linear_a8.cpp):
inline constexpr int64_t kMaxGemvTokens = 16;  // more tokens (prefill) run as a GEMM on dequantized panels
inline constexpr int kRowBlock = 4;             // weight rows per pass of the AVX-512 kernels
inline constexpr int kTokenBlock = 4;           // tokens sharing one pass over those rows (their codes in registers)
inline constexpr int64_t kPrefetchRows = 8;     // how far ahead (in rows) the AVX-512 kernels prefetch

at::Tensor quant_linear_cpu(const at::Tensor& x2d, const QuantView& w, const c10::optional<at::Tensor>& bias);

// The same with the activations quantized to int8 per token and block of 32 columns (quant_linear_a8.cpp).
at::Tensor quant_linear_a8_cpu(const at::Tensor& x2d, const QuantView& w, const c10::optional<at::Tensor>& bias);

// The instruction set the kernels run with on this CPU: "avx512", "avx2", "baseline" or "portable".
const char* selected_isa();
// ... and the int8-activation kernels: "avx512-vnni" or "portable".
const char* selected_a8_isa();

}  // namespace fastformers

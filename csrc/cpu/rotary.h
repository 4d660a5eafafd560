#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace fastformers {

// One head's row rotated (rotate-half convention): the first R features (R even) by cos c / sin s, the rest copied;
// out may be in.
inline void rotate_row(const float* in, const float* c, const float* s, int64_t R, int64_t D, float* out) {
  const int64_t half = R / 2;
  for (int64_t j = 0; j < half; ++j) {
    const float a = in[j], b = in[j + half];
    out[j] = a * c[j] + (-b) * s[j];
    out[j + half] = b * c[j + half] + a * s[j + half];
  }
  if (out != in)
    for (int64_t j = R; j < D; ++j) out[j] = in[j];
}

// (q, k) rotated: q, k (batch, heads, seq, head_dim) float32; cos, sin (seq, rot) or (batch, seq, rot).
std::tuple<at::Tensor, at::Tensor> rotary_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos,
                                              const at::Tensor& sin);

}  // namespace fastformers

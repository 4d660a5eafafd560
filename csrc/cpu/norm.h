#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <tuple>

#include "vec.h"

namespace fastformers {

// One row of RMSNorm, torch's float32 arithmetic: out = h * rsqrt(mean(h^2) + eps) * weight (out may be h).
inline void rms_row(const float* h, const float* weight, float eps, int64_t D, float* out) {
  const float inv = 1.f / std::sqrt(dot(h, h, D) / static_cast<float>(D) + eps);
  for (int64_t i = 0; i < D; ++i) out[i] = h[i] * inv * weight[i];
}

// RMSNorm over the last dimension (float32): x * rsqrt(mean(x^2) + eps) * weight.
at::Tensor rms_norm_cpu(const at::Tensor& x, const at::Tensor& weight, double eps);

// (rms_norm(x + residual), x + residual): a pre-norm decoder's residual add and norm in one pass.
std::tuple<at::Tensor, at::Tensor> add_rms_norm_cpu(const at::Tensor& x, const at::Tensor& residual,
                                                    const at::Tensor& weight, double eps);

}  // namespace fastformers

#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace fastformers {

// RMSNorm over the last dimension (float32): x * rsqrt(mean(x^2) + eps) * weight.
at::Tensor rms_norm_cpu(const at::Tensor& x, const at::Tensor& weight, double eps);

// (rms_norm(x + residual), x + residual): a pre-norm decoder's residual add and norm in one pass.
std::tuple<at::Tensor, at::Tensor> add_rms_norm_cpu(const at::Tensor& x, const at::Tensor& residual,
                                                    const at::Tensor& weight, double eps);

}  // namespace fastformers

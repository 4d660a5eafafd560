#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace fastformers {

// (q, k) rotated: q, k (batch, heads, seq, head_dim) float32; cos, sin (seq, rot) or (batch, seq, rot).
std::tuple<at::Tensor, at::Tensor> rotary_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos,
                                              const at::Tensor& sin);

}  // namespace fastformers

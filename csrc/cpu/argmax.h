#pragma once

#include <ATen/ATen.h>

namespace fastformers {

// torch.argmax(x, dim=-1) for float32 x (see argmax.cpp): int64 indices of shape x.shape[:-1].
at::Tensor argmax_cpu(const at::Tensor& x);

// The same for one row of V floats.
int64_t argmax_row(const float* x, int64_t V);

}  // namespace fastformers

#pragma once

#include <ATen/ATen.h>

namespace fastformers {

// Whether gemm_f32_cpu can run here: AVX2 and FMA, and not FASTFORMERS_CPU_PORTABLE=1.
bool gemm_f32_usable();

// A float32 weight (N, K) in gemm_f32's layout: panels of 16 outputs, (ceil(N / 16), K, 16) float32, the outputs past
// N zero. A plain tensor (it can be saved, compared, mapped from a file).
at::Tensor pack_f32_cpu(const at::Tensor& weight);

// y = act(x2d packed^T + bias) (+ residual): x2d (M, K) float32 with unit column stride, packed from pack_f32_cpu for
// N outputs, bias (N) or undefined, residual (M, N) contiguous or undefined (added after the activation; it may be y
// itself); y (M, N) contiguous float32. act: 0 none, 1 GELU (erf), 2 GELU (tanh approximation).
void gemm_f32_cpu(const at::Tensor& x2d, const at::Tensor& packed, int64_t N, const at::Tensor& bias,
                  const at::Tensor& residual, int64_t act, at::Tensor& y);

}  // namespace fastformers

#pragma once

#include <ATen/ATen.h>

namespace fastformers {

// Whether gemm_a8_cpu can run here (AVX-512 VNNI, and not FASTFORMERS_CPU_PORTABLE=1).
bool gemm_a8_usable();

// x2d (M, K) float32 against 8-bit codes in groups of 32 with activations quantized per block of 32 (method
// blockwise_a8), from the weight packed for it: packed (N, K) uint8 in gemm_a8.cpp's layout, scales_t (K / 32, N)
// float32, N and K multiples of 32; bias (N) float32 or undefined. Writes y, contiguous (M, N) float32.
void gemm_a8_cpu(const at::Tensor& x2d, const at::Tensor& packed, const at::Tensor& scales_t, const at::Tensor& bias,
                 at::Tensor& y);

}  // namespace fastformers

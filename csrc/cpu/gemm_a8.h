#pragma once

#include <ATen/ATen.h>

namespace fastformers {

// Whether gemm_a8_cpu can run here in a mode (not with FASTFORMERS_CPU_PORTABLE=1): with AVX-512 VNNI both; with
// AVX2 the per-token one (W8A8).
bool gemm_a8_usable(bool per_token);

// x2d (M, K) float32 against 8-bit codes from the weight packed for this kernel: packed (N, K) uint8 in gemm_a8.cpp's
// layout, N and K multiples of 32; bias (N) float32 or undefined. Writes y, contiguous (M, N) float32.
//   per_token false: groups of 32 with activations quantized per block of 32 (method blockwise_a8); scales are the
//                    weight's transposed, (K / 32, N) float32.
//   per_token true:  W8A8: one scale per output, scales (N) float32, activations quantized per token.
void gemm_a8_cpu(const at::Tensor& x2d, const at::Tensor& packed, const at::Tensor& scales, const at::Tensor& bias,
                 at::Tensor& y, bool per_token = false);

}  // namespace fastformers

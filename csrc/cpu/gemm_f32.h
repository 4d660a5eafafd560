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

// int8 codes (N, K) in the layout of gemm_block8_cpu: (ceil(N / 16), K, 16) int8, the outputs past N zero.
at::Tensor pack_q8_cpu(const at::Tensor& codes);

// y = act(x2d W^T + bias) (+ residual) for method blockwise_a8 with 8-bit codes in groups of 32 (gemm_f32.cpp says
// how): the codes packed by pack_q8_cpu, scales_t (K / 32, N) float32 (the weight's scales transposed), x2d's
// activations quantized per block of 32 on the way; K a multiple of 32. The other arguments as gemm_f32_cpu's.
void gemm_block8_cpu(const at::Tensor& x2d, const at::Tensor& packed, int64_t N, const at::Tensor& scales_t,
                     const at::Tensor& bias, const at::Tensor& residual, int64_t act, at::Tensor& y);

}  // namespace fastformers

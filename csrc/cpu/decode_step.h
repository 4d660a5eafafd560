#pragma once

#include <ATen/ATen.h>

#include <ATen/core/List.h>

namespace fastformers {

// One decode step (one new token per sequence) through every layer of a pre-norm Llama-family decoder, in one call:
// see decode_step.cpp for the layout of `weights` and `formats`. Writes each layer's key / value into its static
// cache at cache_position and returns the final RMSNorm's output (batch, 1, hidden).
at::Tensor decode_layers_cpu(const at::Tensor& x, const c10::List<c10::optional<at::Tensor>>& weights,
                             at::IntArrayRef formats, at::TensorList k_caches, at::TensorList v_caches,
                             const at::Tensor& cache_position, const c10::optional<at::Tensor>& keep,
                             const at::Tensor& cos, const at::Tensor& sin, int64_t num_heads, int64_t num_kv_heads,
                             double eps, double scale);

}  // namespace fastformers

#pragma once

#include <ATen/ATen.h>

#include <ATen/core/List.h>

namespace fastformers {

// Every layer of a post-norm BERT-family encoder over unpadded tokens x (tokens, hidden) with sequence offsets
// cu_seqlens, in one call: see encoder_step.cpp for the layout of `weights` and `formats`. Returns the last
// layer's output (tokens, hidden).
at::Tensor encoder_layers_cpu(const at::Tensor& x, const at::Tensor& cu_seqlens,
                              const c10::List<c10::optional<at::Tensor>>& weights, at::IntArrayRef formats,
                              int64_t num_heads, double eps, int64_t act);

}  // namespace fastformers

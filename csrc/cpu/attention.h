#pragma once

#include <ATen/ATen.h>

namespace fastformers {

// softmax(q k^T * scale) v for one query per (sequence, head): q (batch, heads, 1, head_dim), k, v (batch, kv_heads,
// kv_len, head_dim), keep (batch|1, kv_len) or none. Float32.
at::Tensor decode_attention_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const c10::optional<at::Tensor>& keep, double scale);

}  // namespace fastformers

#pragma once

#include <ATen/ATen.h>

namespace fastformers {

// One query row against L keys / values (rows k_step / v_step floats apart), keys with keep[j] false skipped (keep
// may be null): out[0:D] = softmax(q . k_j * scale) weighted sum of v_j, zeros when no key is kept. score: L floats.
void attend_row(const float* q, const float* k, int64_t k_step, const float* v, int64_t v_step, const bool* keep,
                int64_t L, int64_t D, float scale, float* score, float* out);

// softmax(q k^T * scale) v for one query per (sequence, head): q (batch, heads, 1, head_dim), k, v (batch, kv_heads,
// kv_len, head_dim), keep (batch|1, kv_len) or none. Float32.
at::Tensor decode_attention_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const c10::optional<at::Tensor>& keep, double scale);

}  // namespace fastformers

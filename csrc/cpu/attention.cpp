// Decode attention on CPUs (float32): one query per sequence and head against a KV cache, grouped-query heads read
// their shared key/value head in place, keys hidden by a (batch|1, kv_len) keep-mask are skipped, and a row that
// keeps no key gives zeros (ops.attention's contract). One pass per (sequence, head) -- scores, a max-subtracted
// exponent, the weighted sum of values -- instead of the mask building and dispatch of SDPA around a tiny product.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <limits>
#include <vector>

#include "attention.h"
#include "vec.h"

namespace fastformers {

void attend_row(const float* q, const float* k, int64_t k_step, const float* v, int64_t v_step, const bool* keep,
                int64_t L, int64_t D, float scale, float* score, float* out) {
  float best = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < L; ++j) {
    if (keep && !keep[j]) continue;
    score[j] = dot(q, k + j * k_step, D) * scale;
    best = std::max(best, score[j]);
  }
  for (int64_t d = 0; d < D; ++d) out[d] = 0.f;
  if (best == -std::numeric_limits<float>::infinity()) return;  // no key kept: zeros
  float total = 0;
  for (int64_t j = 0; j < L; ++j) {
    if (keep && !keep[j]) continue;
    const float p = std::exp(score[j] - best);
    total += p;
    const float* vj = v + j * v_step;
    for (int64_t d = 0; d < D; ++d) out[d] += p * vj[d];
  }
  const float inv = 1.f / total;
  for (int64_t d = 0; d < D; ++d) out[d] *= inv;
}

at::Tensor decode_attention_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const c10::optional<at::Tensor>& keep, double scale) {
  TORCH_CHECK(q.scalar_type() == at::kFloat && k.scalar_type() == at::kFloat && v.scalar_type() == at::kFloat,
              "fastformers_ext::decode_attention: q, k and v must be float32");
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.sizes() == k.sizes() && q.size(2) == 1 && q.size(0) == k.size(0) &&
                  q.size(3) == k.size(3) && k.size(1) > 0 && q.size(1) % k.size(1) == 0,
              "fastformers_ext::decode_attention: expected q (batch, heads, 1, head_dim) and k, v (batch, kv_heads, "
              "kv_len, head_dim) with kv_heads dividing heads, got q ", q.sizes(), ", k ", k.sizes(), ", v ",
              v.sizes());
  const int64_t B = q.size(0), H = q.size(1), Hkv = k.size(1), L = k.size(2), D = q.size(3), group = H / Hkv;
  at::Tensor mask;
  if (keep.has_value()) {
    TORCH_CHECK(keep->dim() == 2 && (keep->size(0) == B || keep->size(0) == 1) && keep->size(1) == L,
                "fastformers_ext::decode_attention: the keep-mask must be (batch or 1, kv_len) = (", B, ", ", L,
                "), got ", keep->sizes());
    mask = keep->to(at::kBool).contiguous();
  }
  const at::Tensor qc = q.contiguous();
  const at::Tensor kc = k.stride(3) == 1 ? k : k.contiguous(), vc = v.stride(3) == 1 ? v : v.contiguous();
  at::Tensor out = at::empty({B, H, 1, D}, q.options());
  const float* qp = qc.data_ptr<float>();
  const float* kp = kc.data_ptr<float>();
  const float* vp = vc.data_ptr<float>();
  const bool* mp = mask.defined() ? mask.data_ptr<bool>() : nullptr;
  const bool mask_batched = mask.defined() && mask.size(0) > 1;
  float* op = out.data_ptr<float>();
  const int64_t kb = kc.stride(0), kh = kc.stride(1), kl = kc.stride(2);
  const int64_t vb = vc.stride(0), vh = vc.stride(1), vl = vc.stride(2);
  const float s = static_cast<float>(scale);
  // a (sequence, head) pair is L * D multiply-adds twice: parallel only when that is worth waking a thread
  at::parallel_for(0, B * H, std::max<int64_t>(1, 32768 / std::max<int64_t>(L * D, 1)), [&](int64_t i0, int64_t i1) {
    std::vector<float> score(L);
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / H, h = i % H, g = h / group;
      const float* qi = qp + i * D;
      const float* kbase = kp + b * kb + g * kh;
      const float* vbase = vp + b * vb + g * vh;
      const bool* mrow = mp ? mp + (mask_batched ? b : 0) * L : nullptr;
      attend_row(qi, kbase, kl, vbase, vl, mrow, L, D, s, score.data(), op + i * D);
    }
  });
  return out;
}

}  // namespace fastformers

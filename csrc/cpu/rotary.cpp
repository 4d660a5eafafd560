// Rotary position embedding on CPUs (float32, the rotate-half convention of Llama / NeoX): q and k rotated in one
// call, read through their strides (a decoder hands them over as transposed views), written contiguous. The same
// products and sums as the reference, x * cos + rotate_half(x) * sin; only the first rot_dim features rotate.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "rotary.h"

namespace fastformers {
namespace {

// x: (B, H, S, D) with unit stride along D; cos / sin: (Bc, S, R) contiguous, Bc 1 or B.
at::Tensor rotate(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t B = x.size(0), H = x.size(1), S = x.size(2), D = x.size(3), R = cos.size(2);
  const bool batched = cos.size(0) > 1;
  at::Tensor out = at::empty({B, H, S, D}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* cp = cos.data_ptr<float>();
  const float* sp = sin.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t sb = x.stride(0), sh = x.stride(1), ss = x.stride(2);
  at::parallel_for(0, B * H * S, std::max<int64_t>(1, 8192 / std::max<int64_t>(D, 1)), [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / (H * S), h = (i / S) % H, s = i % S;
      const float* in = xp + b * sb + h * sh + s * ss;
      const float* c = cp + ((batched ? b : 0) * S + s) * R;
      const float* n = sp + ((batched ? b : 0) * S + s) * R;
      float* o = op + i * D;
      rotate_row(in, c, n, R, D, o);
    }
  });
  return out;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> rotary_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos,
                                              const at::Tensor& sin) {
  TORCH_CHECK(q.scalar_type() == at::kFloat && k.scalar_type() == at::kFloat && cos.scalar_type() == at::kFloat &&
                  sin.scalar_type() == at::kFloat,
              "fastformers_ext::rotary: q, k, cos and sin must be float32");
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4, "fastformers_ext::rotary: q and k must be (batch, heads, seq, head_dim), got ",
              q.sizes(), " and ", k.sizes());
  at::Tensor c = cos.dim() == 2 ? cos.unsqueeze(0) : cos, s = sin.dim() == 2 ? sin.unsqueeze(0) : sin;
  TORCH_CHECK(c.dim() == 3 && c.sizes() == s.sizes(), "fastformers_ext::rotary: cos ", cos.sizes(), " and sin ",
              sin.sizes(), " must both be (seq, rot_dim) or (batch, seq, rot_dim)");
  const int64_t R = c.size(2);
  for (const at::Tensor* x : {&q, &k})
    TORCH_CHECK(c.size(1) == x->size(2) && (c.size(0) == 1 || c.size(0) == x->size(0)) && R % 2 == 0 &&
                    R <= x->size(3),
                "fastformers_ext::rotary: cos/sin ", c.sizes(), " do not fit q/k ", x->sizes());
  c = c.contiguous();
  s = s.contiguous();
  auto unit = [](const at::Tensor& x) { return x.stride(3) == 1 ? x : x.contiguous(); };
  return {rotate(unit(q), c, s), rotate(unit(k), c, s)};
}

}  // namespace fastformers

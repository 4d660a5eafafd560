// RMSNorm on CPUs, float32, optionally fused with the residual add of a pre-norm decoder: the same arithmetic as
// torch's F.rms_norm (x * rsqrt(mean(x^2) + eps), then * weight, in float32), in one pass per row instead of
// half a dozen torch ops -- at one token per decode step a row is a few hundred floats and the dispatch of those
// ops, not the arithmetic, is the cost.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>

#include "norm.h"
#include "vec.h"

namespace fastformers {
namespace {

// out = rms_norm(x + residual) (residual may be null; sum, when given, receives x + residual).
void rows(const float* x, const float* residual, const float* weight, float eps, int64_t D, float* out, float* sum,
          int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* xr = x + r * D;
    float* o = out + r * D;
    const float* h = xr;
    if (residual) {
      float* s = sum + r * D;
      const float* rr = residual + r * D;
      for (int64_t k = 0; k < D; ++k) s[k] = xr[k] + rr[k];
      h = s;
    }
    rms_row(h, weight, eps, D, o);
  }
}

void check(const at::Tensor& x, const at::Tensor& weight, const char* op) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && weight.scalar_type() == at::kFloat, "fastformers_ext::", op,
              ": x and weight must be float32, got ", x.scalar_type(), " and ", weight.scalar_type());
  TORCH_CHECK(x.dim() >= 1 && weight.dim() == 1 && weight.size(0) == x.size(-1), "fastformers_ext::", op, ": weight ",
              weight.sizes(), " does not match the last dimension of x ", x.sizes());
}

void run(const at::Tensor& x, const float* residual, const at::Tensor& weight, double eps, at::Tensor& out,
         float* sum) {
  const int64_t D = x.size(-1), R = D ? x.numel() / D : 0;
  const float* xp = x.data_ptr<float>();
  const float* wp = weight.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const float e = static_cast<float>(eps);
  at::parallel_for(0, R, std::max<int64_t>(1, 16384 / std::max<int64_t>(D, 1)),
                   [&](int64_t r0, int64_t r1) { rows(xp, residual, wp, e, D, op, sum, r0, r1); });
}

}  // namespace

at::Tensor rms_norm_cpu(const at::Tensor& x, const at::Tensor& weight, double eps) {
  check(x, weight, "rms_norm");
  const at::Tensor xc = x.contiguous(), wc = weight.contiguous();
  at::Tensor out = at::empty_like(xc);
  run(xc, nullptr, wc, eps, out, nullptr);
  return out;
}

std::tuple<at::Tensor, at::Tensor> add_rms_norm_cpu(const at::Tensor& x, const at::Tensor& residual,
                                                    const at::Tensor& weight, double eps) {
  check(x, weight, "add_rms_norm");
  TORCH_CHECK(residual.sizes() == x.sizes() && residual.scalar_type() == at::kFloat,
              "fastformers_ext::add_rms_norm: residual ", residual.sizes(), " ", residual.scalar_type(),
              " must be float32 of x's shape ", x.sizes());
  const at::Tensor xc = x.contiguous(), rc = residual.contiguous(), wc = weight.contiguous();
  at::Tensor out = at::empty_like(xc), sum = at::empty_like(xc);
  run(xc, rc.data_ptr<float>(), wc, eps, out, sum.data_ptr<float>());
  return {out, sum};
}

}  // namespace fastformers

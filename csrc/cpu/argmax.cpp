// Argmax over the last dimension on CPUs, float32: torch.argmax(x, dim=-1)'s answer -- the first index of the largest
// value, a NaN counting as larger than any number (the first NaN wins), a row of -inf giving 0 -- for greedy
// decoding's pick over a vocabulary. torch's reduction takes ~40 us for a 49k-entry row on this project's 2-core
// AVX-512 CPU, a few percent of a decode step of a small model; this one reads the row once, 16 lanes at a time.
//
// AVX-512: each lane keeps its largest value and that value's first index (a later value replaces it only when
// strictly larger), and whether it saw a NaN; the row's answer is the smallest index among the lanes holding the
// largest value, or, with a NaN, the first NaN found by a scalar scan. Elsewhere (or FASTFORMERS_CPU_PORTABLE=1) the
// same rule in a scalar loop.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <climits>
#include <cmath>
#include <limits>

#include "argmax.h"
#include "quant_x86.h"

namespace fastformers {
namespace {

int64_t row_portable(const float* x, int64_t V) {
  int64_t best = 0;
  for (int64_t i = 1; i < V; ++i) {
    if (std::isnan(x[best])) break;
    if (x[i] > x[best] || std::isnan(x[i])) best = i;
  }
  return best;
}

#if FF_X86
FF_AVX512 int64_t row_avx512(const float* x, int64_t V) {
  const __m512 ninf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  const __m512i step = _mm512_set1_epi32(16);
  __m512i at = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  __m512 best = ninf;
  __m512i where = at;
  __mmask16 nan = 0;
  for (int64_t i = 0; i < V; i += 16) {
    const __mmask16 live = first_lanes(V - i);
    const __m512 v = _mm512_mask_loadu_ps(ninf, live, x + i);  // lanes past the row: -inf, never strictly larger
    const __mmask16 larger = _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ);
    best = _mm512_mask_mov_ps(best, larger, v);
    where = _mm512_mask_mov_epi32(where, larger, at);
    nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    at = _mm512_add_epi32(at, step);
  }
  if (nan) return row_portable(x, V);
  const float top = _mm512_reduce_max_ps(best);
  const __mmask16 holds = _mm512_cmp_ps_mask(best, _mm512_set1_ps(top), _CMP_EQ_OQ);
  return _mm512_reduce_min_epi32(_mm512_mask_mov_epi32(_mm512_set1_epi32(INT_MAX), holds, where));
}
#endif

bool use_avx512() {
  static const bool yes = avx512_usable(false);
  return yes;
}

}  // namespace

int64_t argmax_row(const float* x, int64_t V) {
#if FF_X86
  if (use_avx512()) return row_avx512(x, V);
#endif
  return row_portable(x, V);
}

at::Tensor argmax_cpu(const at::Tensor& x) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.dim() >= 1 && x.size(-1) > 0 && x.size(-1) < INT_MAX,
              "fastformers_ext::argmax: x must be float32 with a last dimension of 1 to 2^31 - 2 entries, got ",
              x.scalar_type(), " ", x.sizes());
  const int64_t V = x.size(-1);
  const at::Tensor rows = x.reshape({-1, V}).contiguous();
  at::Tensor out = at::empty({rows.size(0)}, x.options().dtype(at::kLong));
  const float* xp = rows.data_ptr<float>();
  int64_t* op = out.data_ptr<int64_t>();
  at::parallel_for(0, rows.size(0), std::max<int64_t>(1, (1 << 16) / V), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) op[r] = argmax_row(xp + r * V, V);
  });
  return out.view(x.sizes().slice(0, x.dim() - 1));
}

}  // namespace fastformers

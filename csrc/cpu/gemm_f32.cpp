// float32 GEMM for many tokens (an encoder's batch) on a weight repacked for it, with its epilogue fused, for CPUs
// with AVX2 and FMA:
//   y[t, n] = act(sum_k x[t, k] w[n, k] + bias[n]) (+ residual[t, n]).
// Why our own: on an AVX2-only EPYC (2 cores) it runs MiniLM's shapes as fast as oneDNN's packed GEMM at 1024 tokens
// (~70 GFLOP/s on both cores) and 1.3-1.6x faster at 16; its packed weight is a plain tensor (oneDNN's is opaque: it
// cannot be saved), and nothing is built per new shape (oneDNN builds a primitive on the first call). On that
// machine a loop of independent FMAs ran 20 G multiply-adds per second per core (~40 GFLOP/s) and this tile, from
// L1, 22 G: the GEMMs run near the FMA rate. On AVX-512 CPUs oneDNN's GEMM was measured at ~91% of the peak and
// stays (ops/encoder.py chooses).
//
// Layout: panels of 16 outputs, [ceil(N / 16)][K][16] (the outputs past N zero), so one k step of a panel is two
// 8-lane vectors. A tile of 6 tokens x 16 outputs keeps 12 accumulators in registers (2 for the weight, 1 for the
// broadcast token value: 15 of 16); each weight vector loaded serves 6 tokens. The k sums run in order per output,
// not in the order of torch's GEMM: results agree to float32 rounding, not bit for bit. Threads split the panels;
// each goes through the tokens in blocks that stay in its L2 cache.
//
// Method blockwise_a8 (8-bit codes in groups of 32 with a scale per output and group; activations quantized per
// token and block of 32) runs on the same tiles (gemm_block8_cpu): a panel of int8 codes, [ceil(N / 16)][K][16] (4x
// fewer bytes to read than float32), is widened to float32 times its scales into a scratch panel before the tiles
// read it, and the activations are quantized and dequantized (xq * sx) into float32 as quantized_linear_reference
// computes them. On an AVX2-only EPYC this ran MiniLM 8 x 128 in 365 ms against 493 ms for int16 products per block
// (vpmaddwd, whose rate there equals the FMAs'; the per-block scaling and the 4-token tiles it leaves room for cost
// the rest).

#include "gemm_f32.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "avx2.h"

namespace fastformers {

bool gemm_f32_usable() {
#if FF_X86
  static const bool usable = avx2_usable();
  return usable;
#else
  return false;
#endif
}

at::Tensor pack_f32_cpu(const at::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 2 && weight.scalar_type() == at::kFloat && weight.device().is_cpu() &&
                  weight.layout() == at::kStrided,
              "fastformers_ext::pack_f32: expected a strided float32 (out_features, in_features) CPU weight, got ",
              weight.scalar_type(), " ", weight.sizes());
  const int64_t N = weight.size(0), K = weight.size(1), panels = (N + 15) / 16;
  at::Tensor packed = at::zeros({panels, K, 16}, weight.options());
  const at::Tensor w = weight.contiguous();
  const float* wp = w.data_ptr<float>();
  float* pp = packed.data_ptr<float>();
  at::parallel_for(0, panels, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p)
      for (int64_t j = 0; j < 16 && p * 16 + j < N; ++j) {
        const float* row = wp + (p * 16 + j) * K;
        float* out = pp + p * K * 16 + j;
        for (int64_t k = 0; k < K; ++k) out[k * 16] = row[k];
      }
  });
  return packed;
}

at::Tensor pack_q8_cpu(const at::Tensor& codes) {
  TORCH_CHECK(codes.dim() == 2 && codes.scalar_type() == at::kChar && codes.device().is_cpu() &&
                  codes.layout() == at::kStrided,
              "fastformers_ext::pack_q8: expected strided int8 codes (out_features, in_features) on the CPU, got ",
              codes.scalar_type(), " ", codes.sizes());
  const int64_t N = codes.size(0), K = codes.size(1);
  at::Tensor padded = at::zeros({(N + 15) / 16 * 16, K}, codes.options());
  padded.slice(0, 0, N).copy_(codes);
  return padded.view({-1, 16, K}).transpose(1, 2).contiguous();
}

#if FF_X86
namespace {

constexpr int kRows = 6;  // tokens per tile

// GELU(v) = v / 2 * (1 + erf(v / sqrt 2)), erf by Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7, as oneDNN's GELU
// post-op): for z = |v| / sqrt 2, 1 - erf(z) = t (a1 + t (a2 + ...)) e^(-z^2) with t = 1 / (1 + p z); for v < 0
// the result is v / 2 times that tail (no 1 + erf cancellation).
FF_AVX2 inline __m256 gelu_erf8(__m256 v) {
  const __m256 sign = _mm256_set1_ps(-0.f);
  const __m256 z = _mm256_mul_ps(_mm256_andnot_ps(sign, v), _mm256_set1_ps(0.70710678118654752f));
  const __m256 t = _mm256_div_ps(_mm256_set1_ps(1.f), _mm256_fmadd_ps(z, _mm256_set1_ps(0.3275911f),
                                                                       _mm256_set1_ps(1.f)));
  __m256 poly = _mm256_set1_ps(1.061405429f);
  poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(-1.453152027f));
  poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(1.421413741f));
  poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(-0.284496736f));
  poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(0.254829592f));
  const __m256 tail = _mm256_mul_ps(_mm256_mul_ps(poly, t), exp_nonpositive8(_mm256_xor_ps(_mm256_mul_ps(z, z), sign)));
  const __m256 negative = _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LT_OQ);
  const __m256 factor = _mm256_blendv_ps(_mm256_sub_ps(_mm256_set1_ps(2.f), tail), tail, negative);
  return _mm256_mul_ps(_mm256_mul_ps(v, _mm256_set1_ps(0.5f)), factor);
}

// GELU, tanh approximation: v / 2 * (1 + tanh(u)), u = sqrt(2 / pi) (v + 0.044715 v^3); tanh(|u|) = (1 - e) / (1 + e)
// with e = e^(-2 |u|) (no overflow), the sign put back.
FF_AVX2 inline __m256 gelu_tanh8(__m256 v) {
  const __m256 sign = _mm256_set1_ps(-0.f), one = _mm256_set1_ps(1.f);
  const __m256 u = _mm256_mul_ps(_mm256_set1_ps(0.79788456080286536f),
                                 _mm256_fmadd_ps(_mm256_mul_ps(_mm256_mul_ps(v, v), v), _mm256_set1_ps(0.044715f), v));
  const __m256 e = exp_nonpositive8(_mm256_mul_ps(_mm256_andnot_ps(sign, u), _mm256_set1_ps(-2.f)));
  const __m256 th = _mm256_div_ps(_mm256_sub_ps(one, e), _mm256_add_ps(one, e));
  const __m256 signed_th = _mm256_or_ps(th, _mm256_and_ps(u, sign));
  return _mm256_mul_ps(_mm256_mul_ps(v, _mm256_set1_ps(0.5f)), _mm256_add_ps(one, signed_th));
}

struct Epilogue {
  const float* bias;      // N, or null
  const float* residual;  // (M, N), or null
  int64_t act;            // 0 none, 1 GELU (erf), 2 GELU (tanh)
};

FF_AVX2 inline void activate(__m256& v0, __m256& v1, int64_t act) {
  if (act == 1) {
    v0 = gelu_erf8(v0);
    v1 = gelu_erf8(v1);
  } else if (act == 2) {
    v0 = gelu_tanh8(v0);
    v1 = gelu_tanh8(v1);
  }
}

// The epilogue of a tile whose 16 outputs from n are all < N: plain loads and stores (masked ones are slow on some
// CPUs: MiniLM 8x128 lost ~35 ms of ~410 to them in the attention on an AVX2-only EPYC).
template <int R>
FF_AVX2 void whole_tile(const __m256 (&acc)[6][2], int64_t n, int64_t t0, int64_t N, const Epilogue& ep, float* y) {
  const __m256 b0 = ep.bias ? _mm256_loadu_ps(ep.bias + n) : _mm256_setzero_ps();
  const __m256 b1 = ep.bias ? _mm256_loadu_ps(ep.bias + n + 8) : _mm256_setzero_ps();
  for (int r = 0; r < R; ++r) {
    __m256 v0 = _mm256_add_ps(acc[r][0], b0), v1 = _mm256_add_ps(acc[r][1], b1);
    activate(v0, v1, ep.act);
    const int64_t at = (t0 + r) * N + n;
    if (ep.residual) {
      v0 = _mm256_add_ps(v0, _mm256_loadu_ps(ep.residual + at));
      v1 = _mm256_add_ps(v1, _mm256_loadu_ps(ep.residual + at + 8));
    }
    _mm256_storeu_ps(y + at, v0);
    _mm256_storeu_ps(y + at + 8, v1);
  }
}

// Rows t0 .. t0 + R of x (rows lda apart) times panel p (K x 16), then the epilogue, into y (rows N apart).
template <int R>
FF_AVX2 void tile(const float* x, int64_t lda, const float* panel, int64_t K, int64_t t0, int64_t p, int64_t N,
                  const Epilogue& ep, float* y) {
  static_assert(R >= 1 && R <= kRows, "tile rows");
  // named accumulators, not an array: GCC kept an array's elements on the stack, storing them on every k step
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00,
         c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  const float* xr = x + t0 * lda;
  for (int64_t k = 0; k < K; ++k) {
    const __m256 w0 = _mm256_loadu_ps(panel + k * 16), w1 = _mm256_loadu_ps(panel + k * 16 + 8);
#define FF_ROW(i, lo, hi)                                        \
  if (R > i) {                                                   \
    const __m256 a = _mm256_broadcast_ss(xr + i * lda + k);      \
    lo = _mm256_fmadd_ps(a, w0, lo);                             \
    hi = _mm256_fmadd_ps(a, w1, hi);                             \
  }
    FF_ROW(0, c00, c01)
    FF_ROW(1, c10, c11)
    FF_ROW(2, c20, c21)
    FF_ROW(3, c30, c31)
    FF_ROW(4, c40, c41)
    FF_ROW(5, c50, c51)
#undef FF_ROW
  }
  const __m256 acc[kRows][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
  const int64_t n = p * 16;
  if (N - n >= 16) {
    whole_tile<R>(acc, n, t0, N, ep, y);
    return;
  }
  const __m256i m0 = first_lanes8(N - n), m1 = first_lanes8(N - n - 8);
  const __m256 b0 = ep.bias ? _mm256_maskload_ps(ep.bias + n, m0) : _mm256_setzero_ps();
  const __m256 b1 = ep.bias ? _mm256_maskload_ps(ep.bias + n + 8, m1) : _mm256_setzero_ps();
  for (int r = 0; r < R; ++r) {
    __m256 v0 = _mm256_add_ps(acc[r][0], b0), v1 = _mm256_add_ps(acc[r][1], b1);
    activate(v0, v1, ep.act);
    const int64_t at = (t0 + r) * N + n;
    if (ep.residual) {
      v0 = _mm256_add_ps(v0, _mm256_maskload_ps(ep.residual + at, m0));
      v1 = _mm256_add_ps(v1, _mm256_maskload_ps(ep.residual + at + 8, m1));
    }
    _mm256_maskstore_ps(y + at, m0, v0);
    _mm256_maskstore_ps(y + at + 8, m1, v1);
  }
}

FF_AVX2 void rows_of_panel(const float* x, int64_t lda, const float* panel, int64_t K, int64_t t0, int64_t t1,
                           int64_t p, int64_t N, const Epilogue& ep, float* y) {
  int64_t t = t0;
  for (; t + kRows <= t1; t += kRows) tile<kRows>(x, lda, panel, K, t, p, N, ep, y);
  switch (t1 - t) {
    case 5: tile<5>(x, lda, panel, K, t, p, N, ep, y); break;
    case 4: tile<4>(x, lda, panel, K, t, p, N, ep, y); break;
    case 3: tile<3>(x, lda, panel, K, t, p, N, ep, y); break;
    case 2: tile<2>(x, lda, panel, K, t, p, N, ep, y); break;
    case 1: tile<1>(x, lda, panel, K, t, p, N, ep, y); break;
    default: break;
  }
}

constexpr float kTiny = 1.17549435e-38f;  // the smallest normal float: the scale of a row or block of zeros

// Panel p of int8 codes (K x 16) as float32 into out (K x 16), each code times its output's scale of its block of 32
// columns (block_scales (K / 32, N); the outputs past N: zero).
FF_AVX2 void widen_panel(const int8_t* codes, int64_t K, const float* block_scales, int64_t p, int64_t N,
                         float* out) {
  __m256 s0 = _mm256_setzero_ps(), s1 = s0;
  for (int64_t k = 0; k < K; ++k) {
    if (k % 32 == 0) {
      alignas(32) float s[16] = {0};
      const float* row = block_scales + (k / 32) * N + p * 16;
      for (int64_t j = 0; j < 16 && p * 16 + j < N; ++j) s[j] = row[j];
      s0 = _mm256_load_ps(s);
      s1 = _mm256_load_ps(s + 8);
    }
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + k * 16));
    _mm256_storeu_ps(out + k * 16, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)), s0));
    _mm256_storeu_ps(out + k * 16 + 8, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(b, 8))), s1));
  }
}

FF_AVX2 float max_abs(const float* x, int64_t n) {
  const __m256 sign = _mm256_set1_ps(-0.f);
  __m256 top = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) top = _mm256_max_ps(top, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i)));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, top);
  float amax = 0.f;
  for (int j = 0; j < 8; ++j) amax = std::max(amax, lanes[j]);
  for (; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
  return amax;
}

// out[i] = (round half to even of x[i] / s) * s for n values: quantized to codes and dequantized
FF_AVX2 void round_to_codes(const float* x, int64_t n, float s, float* out) {
  const __m256 vs = _mm256_set1_ps(s);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 q = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(x + i), vs),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm256_storeu_ps(out + i, _mm256_mul_ps(q, vs));
  }
  for (; i < n; ++i) out[i] = std::nearbyint(x[i] / s) * s;
}

// Row x (K, a multiple of 32) quantized per block of 32 as the reference does, then dequantized: out = xq * sx of
// its block. |x / sx| <= 127 by construction, so no clamp is needed.
FF_AVX2 void quantize_blocks(const float* x, int64_t K, float* out) {
  for (int64_t k = 0; k < K; k += 32) {
    const float s = std::max(max_abs(x + k, 32) / 127.f, kTiny);
    round_to_codes(x + k, 32, s, out + k);
  }
}

// The epilogue's arguments of op `op` for an (M, N) output, checked.
void check_epilogue(const char* op, int64_t M, int64_t N, const at::Tensor& bias, const at::Tensor& residual,
                    int64_t act, const at::Tensor& y) {
  TORCH_CHECK(!bias.defined() || (bias.scalar_type() == at::kFloat && bias.numel() == N && bias.is_contiguous()),
              op, ": the bias must be contiguous float32 of ", N);
  TORCH_CHECK(!residual.defined() || (residual.scalar_type() == at::kFloat && residual.is_contiguous() &&
                                      residual.dim() == 2 && residual.size(0) == M && residual.size(1) == N),
              op, ": the residual must be contiguous float32 (", M, ", ", N, ")");
  TORCH_CHECK(y.scalar_type() == at::kFloat && y.is_contiguous() && y.dim() == 2 && y.size(0) == M && y.size(1) == N,
              op, ": the output must be contiguous float32 (", M, ", ", N, ")");
  TORCH_CHECK(act >= 0 && act <= 2, op, ": act=", act, "; expected 0 (none), 1 (GELU) or 2 (GELU, tanh)");
}

}  // namespace

void gemm_f32_cpu(const at::Tensor& x2d, const at::Tensor& packed, int64_t N, const at::Tensor& bias,
                  const at::Tensor& residual, int64_t act, at::Tensor& y) {
  TORCH_CHECK(gemm_f32_usable(), "gemm_f32: this CPU has no AVX2 with FMA (or FASTFORMERS_CPU_PORTABLE=1)");
  TORCH_CHECK(x2d.dim() == 2 && x2d.scalar_type() == at::kFloat && x2d.stride(1) == 1,
              "gemm_f32: x must be float32 (tokens, in_features) with unit column stride, got ", x2d.scalar_type(),
              " ", x2d.sizes());
  const int64_t M = x2d.size(0), K = x2d.size(1), panels = (N + 15) / 16;
  TORCH_CHECK(packed.dim() == 3 && packed.scalar_type() == at::kFloat && packed.is_contiguous() &&
                  packed.size(0) == panels && packed.size(1) == K && packed.size(2) == 16,
              "gemm_f32: the packed weight must be contiguous float32 (", panels, ", ", K, ", 16) for ", N,
              " outputs and ", K, " inputs, got ", packed.scalar_type(), " ", packed.sizes());
  check_epilogue("gemm_f32", M, N, bias, residual, act, y);
  if (M == 0 || N == 0) return;
  const Epilogue ep{bias.defined() ? bias.data_ptr<float>() : nullptr,
                    residual.defined() ? residual.data_ptr<float>() : nullptr, act};
  const float* xp = x2d.data_ptr<float>();
  const float* pp = packed.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const int64_t lda = x2d.stride(0);
  // tokens per block: ~128 KB of x rows, a multiple of the tile
  const int64_t block = std::max<int64_t>(kRows, (128 * 1024 / (4 * std::max<int64_t>(K, 1))) / kRows * kRows);
  at::parallel_for(0, panels, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t t0 = 0; t0 < M; t0 += block)
      for (int64_t p = p0; p < p1; ++p)
        rows_of_panel(xp, lda, pp + p * K * 16, K, t0, std::min(M, t0 + block), p, N, ep, yp);
  });
}

void gemm_block8_cpu(const at::Tensor& x2d, const at::Tensor& packed, int64_t N, const at::Tensor& scales_t,
                     const at::Tensor& bias, const at::Tensor& residual, int64_t act, at::Tensor& y) {
  TORCH_CHECK(gemm_f32_usable(), "gemm_block8: this CPU has no AVX2 with FMA (or FASTFORMERS_CPU_PORTABLE=1)");
  TORCH_CHECK(x2d.dim() == 2 && x2d.scalar_type() == at::kFloat && x2d.stride(1) == 1,
              "gemm_block8: x must be float32 (tokens, in_features) with unit column stride, got ", x2d.scalar_type(),
              " ", x2d.sizes());
  const int64_t M = x2d.size(0), K = x2d.size(1), panels = (N + 15) / 16;
  TORCH_CHECK(K % 32 == 0, "gemm_block8: in_features must be a multiple of 32, got ", K);
  TORCH_CHECK(packed.dim() == 3 && packed.scalar_type() == at::kChar && packed.is_contiguous() &&
                  packed.size(0) == panels && packed.size(1) == K && packed.size(2) == 16,
              "gemm_block8: the packed codes must be contiguous int8 (", panels, ", ", K, ", 16) for ", N,
              " outputs and ", K, " inputs (pack_q8), got ", packed.scalar_type(), " ", packed.sizes());
  TORCH_CHECK(scales_t.scalar_type() == at::kFloat && scales_t.is_contiguous() && scales_t.dim() == 2 &&
                  scales_t.size(0) == K / 32 && scales_t.size(1) == N,
              "gemm_block8: the scales must be contiguous float32 (", K / 32, ", ", N, "), the weight's transposed, "
              "got ", scales_t.scalar_type(), " ", scales_t.sizes());
  check_epilogue("gemm_block8", M, N, bias, residual, act, y);
  if (M == 0 || N == 0) return;
  // the activations quantized and dequantized per block of 32 (a buffer kept per calling thread: no page faults on
  // every call; the workers get a raw pointer)
  thread_local std::vector<float> dequantized;
  dequantized.resize(M * K);
  float* const qp = dequantized.data();
  const float* xp = x2d.data_ptr<float>();
  const int64_t lda = x2d.stride(0);
  at::parallel_for(0, M, 16, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) quantize_blocks(xp + t * lda, K, qp + t * K);
  });
  const Epilogue ep{bias.defined() ? bias.data_ptr<float>() : nullptr,
                    residual.defined() ? residual.data_ptr<float>() : nullptr, act};
  const int8_t* cp = packed.data_ptr<int8_t>();
  const float* sp = scales_t.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  // tokens per block: ~256 KB of activations, so a panel widened once serves several tiles
  const int64_t block = std::max<int64_t>(kRows, (256 * 1024 / (4 * K)) / kRows * kRows);
  at::parallel_for(0, panels, 1, [&](int64_t p0, int64_t p1) {
    std::vector<float> wide(static_cast<size_t>(K) * 16);
    for (int64_t t0 = 0; t0 < M; t0 += block)
      for (int64_t p = p0; p < p1; ++p) {
        widen_panel(cp + p * K * 16, K, sp, p, N, wide.data());
        rows_of_panel(qp, K, wide.data(), K, t0, std::min(M, t0 + block), p, N, ep, yp);
      }
  });
}
#else
void gemm_f32_cpu(const at::Tensor&, const at::Tensor&, int64_t, const at::Tensor&, const at::Tensor&, int64_t,
                  at::Tensor&) {
  TORCH_CHECK(false, "gemm_f32: not an x86-64 build");
}
void gemm_block8_cpu(const at::Tensor&, const at::Tensor&, int64_t, const at::Tensor&, const at::Tensor&,
                     const at::Tensor&, int64_t, at::Tensor&) {
  TORCH_CHECK(false, "gemm_block8: not an x86-64 build");
}
#endif

}  // namespace fastformers

// Weight-only quantized linear on CPUs: y = x @ W^T + b with W kept packed (fastformers' QuantizedWeight format,
// which GGUF Q8_0 / Q4_0 / Q4_1 tensors are loaded into): int8 codes (N, K), or int4 codes two per byte
// (column 2j in the low nibble of byte j, 2j+1 in the high one), a float32 scale and (optionally) min per row and
// group of G columns: w[n, k] = q[n, k] * scale[n, k / G] + min[n, k / G].
//
// Activations stay float32, so the result is the dequantized model's up to the order of float additions. Each
// group's sum is factored, sum_k w x = scale * sum_k q x + min * sum_k x, so the inner loop is one multiply-add
// per weight on codes converted to float, and sum_k x is computed once per token and group for all N rows.
// For int4 the activations are first reordered per 32 columns into (even columns, odd columns), the order the
// nibbles come out of the bytes, so the inner loop needs no shuffles.
//
// Instruction sets, picked at run time: an AVX-512 kernel written with intrinsics (two weight rows and up to four
// tokens per pass, so the codes are converted once and the multiply-adds do not wait on each other), and portable
// loops over 16 lanes that GCC compiles twice (AVX2 + FMA and the baseline; the loader picks the clone).
// FASTFORMERS_CPU_PORTABLE=1 forces the portable loops (tests run both). Many tokens (prefill) run through the same
// kernel in tiles of 64 tokens: the codes of a row pair are converted once per 4 tokens, and the work is then the
// multiply-adds a float32 matmul does.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <vector>

#include "quant_linear.h"

#if defined(__GNUC__) && defined(__x86_64__)
#define FF_X86 1
#include <immintrin.h>
#else
#define FF_X86 0
#endif
#if FF_X86 && !defined(__clang__) && defined(__linux__)
#define FF_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define FF_CLONES
#endif

namespace fastformers {
namespace {

constexpr int kLanes = 16;
constexpr int kTokenBlock = 4;  // tokens sharing one pass over a pair of weight rows (their codes stay in registers)
constexpr int64_t kTokenTile = 64;  // tokens whose activations stay in L2 while every row pair passes by

// ---- portable kernel: plain loops over 16 lanes, vectorized by the compiler for each clone ----------------------

FF_CLONES
void gemm_rows_portable(const QuantView& w, const float* x, int64_t M, const float* xsum, const float* bias,
                        float* y, int64_t n0, int64_t n1, int64_t N) {
  const int64_t groups = (w.K + w.G - 1) / w.G;
  const int64_t row_bytes = w.bits == 8 ? w.K : w.K / 2;
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* q = w.q + n * row_bytes;
    for (int64_t m = 0; m < M; ++m) {
      const float* xm = x + m * w.K;
      float total = 0;
      for (int64_t g = 0; g < groups; ++g) {
        float acc[kLanes] = {0};
        if (w.bits == 8) {
          const int8_t* s = reinterpret_cast<const int8_t*>(q) + g * w.G;
          const float* xg = xm + g * w.G;
          for (int64_t k = 0; k < std::min(w.G, w.K - g * w.G); k += kLanes)
            for (int j = 0; j < kLanes; ++j) acc[j] += static_cast<float>(s[k + j]) * xg[k + j];
        } else {
          for (int64_t c = g * w.G; c < std::min((g + 1) * w.G, w.K); c += 32) {  // 16 bytes: even columns low, odd high
            const uint8_t* b = q + c / 2;
            const float* xc = xm + c;
            for (int j = 0; j < 16; ++j)
              acc[j] += static_cast<float>(b[j] & 15) * xc[j] + static_cast<float>(b[j] >> 4) * xc[16 + j];
          }
        }
        float sum = 0;
        for (int j = 0; j < kLanes; ++j) sum += acc[j];
        total += w.scales[n * groups + g] * sum;
        if (w.mins) total += w.mins[n * groups + g] * xsum[m * groups + g];
      }
      y[m * N + n] = bias ? total + bias[n] : total;
    }
  }
}

// ---- AVX-512 kernel -------------------------------------------------------------------------------------------

#if FF_X86
#define FF_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))

FF_AVX512 inline float hsum(__m512 v) { return _mm512_reduce_add_ps(v); }

// Two weight rows (r, r + 1) times T tokens: 2 x T x 2 accumulators (low and high nibbles apart) so that the
// multiply-adds of a chunk do not wait on each other.
template <int T>
FF_AVX512 void rows2_avx512(const QuantView& w, const float* x, const float* xsum, const float* bias, float* y,
                            int64_t n, int64_t N, int64_t M) {
  const int64_t groups = (w.K + w.G - 1) / w.G;
  const int64_t row_bytes = w.bits == 8 ? w.K : w.K / 2;
  const uint8_t* q0 = w.q + n * row_bytes;
  const uint8_t* q1 = q0 + row_bytes;
  __m512 tot[2][T];
  for (int r = 0; r < 2; ++r)
    for (int t = 0; t < T; ++t) tot[r][t] = _mm512_setzero_ps();
  const __m512i low4 = _mm512_set1_epi32(15);
  for (int64_t g = 0; g < groups; ++g) {
    __m512 a[2][T], b[2][T];
    for (int r = 0; r < 2; ++r)
      for (int t = 0; t < T; ++t) a[r][t] = b[r][t] = _mm512_setzero_ps();
    if (w.bits == 4) {
      for (int64_t c = g * w.G; c < std::min((g + 1) * w.G, w.K); c += 32) {
        const __m512i c0 = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q0 + c / 2)));
        const __m512i c1 = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q1 + c / 2)));
        const __m512 lo0 = _mm512_cvtepi32_ps(_mm512_and_si512(c0, low4));
        const __m512 hi0 = _mm512_cvtepi32_ps(_mm512_srli_epi32(c0, 4));
        const __m512 lo1 = _mm512_cvtepi32_ps(_mm512_and_si512(c1, low4));
        const __m512 hi1 = _mm512_cvtepi32_ps(_mm512_srli_epi32(c1, 4));
        for (int t = 0; t < T; ++t) {
          const __m512 xe = _mm512_loadu_ps(x + t * w.K + c), xo = _mm512_loadu_ps(x + t * w.K + c + 16);
          a[0][t] = _mm512_fmadd_ps(lo0, xe, a[0][t]);
          b[0][t] = _mm512_fmadd_ps(hi0, xo, b[0][t]);
          a[1][t] = _mm512_fmadd_ps(lo1, xe, a[1][t]);
          b[1][t] = _mm512_fmadd_ps(hi1, xo, b[1][t]);
        }
      }
    } else {
      for (int64_t c = g * w.G; c < std::min((g + 1) * w.G, w.K); c += 32) {
        const __m512 w00 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q0 + c))));
        const __m512 w01 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q0 + c + 16))));
        const __m512 w10 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q1 + c))));
        const __m512 w11 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q1 + c + 16))));
        for (int t = 0; t < T; ++t) {
          const __m512 x0 = _mm512_loadu_ps(x + t * w.K + c), x1 = _mm512_loadu_ps(x + t * w.K + c + 16);
          a[0][t] = _mm512_fmadd_ps(w00, x0, a[0][t]);
          b[0][t] = _mm512_fmadd_ps(w01, x1, b[0][t]);
          a[1][t] = _mm512_fmadd_ps(w10, x0, a[1][t]);
          b[1][t] = _mm512_fmadd_ps(w11, x1, b[1][t]);
        }
      }
    }
    for (int r = 0; r < 2; ++r) {
      const __m512 d = _mm512_set1_ps(w.scales[(n + r) * groups + g]);
      for (int t = 0; t < T; ++t) tot[r][t] = _mm512_fmadd_ps(_mm512_add_ps(a[r][t], b[r][t]), d, tot[r][t]);
    }
  }
  for (int r = 0; r < 2; ++r) {
    for (int t = 0; t < T; ++t) {
      float out = hsum(tot[r][t]);
      if (w.mins) {
        const float* mn = w.mins + (n + r) * groups;
        const float* xs = xsum + t * groups;
        for (int64_t g = 0; g < groups; ++g) out += mn[g] * xs[g];
      }
      y[t * N + n + r] = bias ? out + bias[n + r] : out;
    }
  }
}

FF_AVX512 void gemm_rows_avx512(const QuantView& w, const float* x, int64_t M, const float* xsum,
                                const float* bias, float* y, int64_t n0, int64_t n1, int64_t N) {
  const int64_t groups = (w.K + w.G - 1) / w.G;
  const int64_t pairs_end = n0 + (n1 - n0) / 2 * 2;
  for (int64_t t0 = 0; t0 < M; t0 += kTokenTile)  // a tile of tokens stays in L2 while the rows pass by
  for (int64_t n = n0; n < pairs_end; n += 2) {
    for (int64_t t = t0; t < std::min(M, t0 + kTokenTile); t += kTokenBlock) {  // the row pair stays in L1
      const float* xt = x + t * w.K;
      const float* st = xsum ? xsum + t * groups : nullptr;
      float* yt = y + t * N;
      switch (std::min<int64_t>(kTokenBlock, std::min(M, t0 + kTokenTile) - t)) {
        case 1: rows2_avx512<1>(w, xt, st, bias, yt, n, N, M); break;
        case 2: rows2_avx512<2>(w, xt, st, bias, yt, n, N, M); break;
        case 3: rows2_avx512<3>(w, xt, st, bias, yt, n, N, M); break;
        default: rows2_avx512<4>(w, xt, st, bias, yt, n, N, M); break;
      }
    }
  }
  if (pairs_end < n1) gemm_rows_portable(w, x, M, xsum, bias, y, pairs_end, n1, N);
}

bool has_avx512() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma");
}
#endif  // FF_X86

bool use_avx512() {
#if FF_X86
  static const bool yes = has_avx512() && !std::getenv("FASTFORMERS_CPU_PORTABLE");
  return yes;
#else
  return false;
#endif
}

void gemm_rows(const QuantView& w, const float* x, int64_t M, const float* xsum, const float* bias, float* y,
               int64_t n0, int64_t n1, int64_t N) {
#if FF_X86
  if (use_avx512()) return gemm_rows_avx512(w, x, M, xsum, bias, y, n0, n1, N);
#endif
  gemm_rows_portable(w, x, M, xsum, bias, y, n0, n1, N);
}

// The activations as the kernels read them: int4 reorders every 32 columns to (even, odd).
at::Tensor prepare_activations(const at::Tensor& x, int bits) {
  if (bits == 8) return x;
  const int64_t M = x.size(0), K = x.size(1);
  return x.view({M, K / 32, 16, 2}).transpose(2, 3).contiguous().view({M, K});
}

}  // namespace

const char* selected_isa() {
  if (use_avx512()) return "avx512";
#if FF_X86 && !defined(__clang__) && defined(__linux__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("x86-64-v3")) return "avx2 (compiler-vectorized portable loops)";
#endif
  return "portable";
}

at::Tensor quant_linear_cpu(const at::Tensor& x2d, const QuantView& w, const c10::optional<at::Tensor>& bias) {
  const int64_t M = x2d.size(0), N = w.N, groups = (w.K + w.G - 1) / w.G;
  const float* b = bias.has_value() ? bias->data_ptr<float>() : nullptr;
  at::Tensor y = at::empty({M, N}, x2d.options());
  at::Tensor xsum_t;
  const float* xsum = nullptr;
  if (w.mins) {  // sum of the activations over each group, shared by every output row
    xsum_t = at::constant_pad_nd(x2d, {0, groups * w.G - w.K}).view({M, groups, w.G}).sum(-1).contiguous();
    xsum = xsum_t.data_ptr<float>();
  }
  const at::Tensor xp = prepare_activations(x2d, w.bits);
  const float* xd = xp.data_ptr<float>();
  float* yd = y.data_ptr<float>();
  // over pairs of rows (the AVX-512 kernel's unit); grain: enough rows that a thread's share is worth waking it
  const int64_t grain = std::max<int64_t>(4, (1 << 15) / std::max<int64_t>(w.K, 1));
  at::parallel_for(0, (N + 1) / 2, grain, [&](int64_t p0, int64_t p1) {
    gemm_rows(w, xd, M, xsum, b, yd, 2 * p0, std::min(2 * p1, N), N);
  });
  return y;
}

}  // namespace fastformers

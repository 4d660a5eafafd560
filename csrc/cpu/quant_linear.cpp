// Weight-only quantized linear on CPUs: y = x @ W^T + b with W kept packed (fastformers' QuantizedWeight format,
// which GGUF Q8_0 / Q4_0 / Q4_1 / Q4_K / Q6_K tensors are loaded into): int8 codes (N, K), or int4 codes two per
// byte (column 2j in the low nibble of byte j, 2j+1 in the high one), a scale and (optionally) min per row and
// group of G columns: w[n, k] = q[n, k] * scale[n, k / G] + min[n, k / G]. G is a multiple of 32, or 16 for int8
// codes (Q6_K's sub-blocks).
//
// Activations stay float32, so the result is the dequantized model's up to the order of float additions. Each
// group's sum is factored, sum_k w x = scale * sum_k q x + min * sum_k x, so the inner loop is one multiply-add
// per weight on codes converted to float, and sum_k x is computed once per token and group for all N rows.
// For int4 the activations are first reordered per 32 columns into (even columns, odd columns), the order the
// nibbles come out of the bytes, so the inner loop needs no shuffles.
//
// Instruction sets, picked at run time: an AVX-512 kernel written with intrinsics (four weight rows and up to four
// tokens per pass, so the codes are converted once and the multiply-adds do not wait on each other), and portable
// loops over 16 lanes that GCC compiles twice (AVX2 + FMA and the baseline; the loader picks the clone).
// FASTFORMERS_CPU_PORTABLE=1 forces the portable loops (tests run both). More than 16 tokens (prefill) dequantize the
// weight a panel of rows at a time, each thread into its own small buffer, and run torch's GEMM on it: there the
// matmul, not the bytes, is the cost. Scales and mins may be float16 (QuantView::half; ops.quant.with_half_scales
// makes such copies where exact), a sixth fewer bytes per token for int4 in groups of 32.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <vector>

#include "quant_linear.h"
#include "quant_x86.h"

#if FF_X86 && !defined(__clang__) && defined(__linux__)
#define FF_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define FF_CLONES
#endif

namespace fastformers {
namespace {

constexpr int kLanes = 16;

// ---- portable kernel: plain loops over 16 lanes, vectorized by the compiler for each clone ----------------------

FF_CLONES
void gemm_rows_portable(const QuantView& w, const float* x, int64_t M, const float* xsum, const float* bias,
                        float* y, int64_t n0, int64_t n1, int64_t N) {
  const int64_t groups = w.groups();
  const int64_t row_bytes = w.row_bytes();
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
        total += w.scale(n * groups + g) * sum;
        if (w.mins) total += w.min(n * groups + g) * xsum[m * groups + g];
      }
      y[m * N + n] = bias ? total + bias[n] : total;
    }
  }
}

FF_CLONES
void dequantize_rows_portable(const QuantView& w, float* out, int64_t n0, int64_t n1) {
  const int64_t groups = w.groups();
  const int64_t row_bytes = w.row_bytes();
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* q = w.q + n * row_bytes;
    float* o = out + n * w.K;
    for (int64_t g = 0; g < groups; ++g) {
      const float d = w.scale(n * groups + g), mn = w.mins ? w.min(n * groups + g) : 0.f;
      for (int64_t k = g * w.G; k < std::min((g + 1) * w.G, w.K); ++k) {
        const int code = w.bits == 8 ? reinterpret_cast<const int8_t*>(q)[k] : (q[k / 2] >> (4 * (k & 1))) & 15;
        o[k] = static_cast<float>(code) * d + mn;
      }
    }
  }
}

// ---- AVX-512 kernel -------------------------------------------------------------------------------------------

#if FF_X86

// R weight rows times T tokens. The codes of a 32-column chunk are converted to float and multiplied by their
// group's scale once, then serve all T tokens (one token: scaled once per group instead); R x T accumulators run
// independent multiply-add chains and carry across groups (no per-group reduction), so the loop is bound by the
// conversions, not by FMA latency.
template <int R, int T>
FF_AVX512 void rows_avx512(const QuantView& w, const float* x, const float* xsum, const float* bias, float* y,
                           int64_t n, int64_t N) {
  const int64_t groups = w.groups();
  const int64_t row_bytes = w.row_bytes();
  const uint8_t* q[R];
  for (int r = 0; r < R; ++r) q[r] = w.q + (n + r) * row_bytes;
  __m512 acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
  const __m512i low4 = _mm512_set1_epi32(15);
  __m512 row_scales[R];  // each row's scales, 16 groups at a time: one permute per group instead of load + broadcast
  for (int64_t g = 0; g < groups; ++g) {
    if (g % 16 == 0)
      for (int r = 0; r < R; ++r)
        row_scales[r] = load16(w, w.scales, (n + r) * groups + g, std::min<int64_t>(16, groups - g));
    const __m512i which = _mm512_set1_epi32(static_cast<int>(g % 16));
    __m512 d[R];
    for (int r = 0; r < R; ++r) d[r] = _mm512_permutexvar_ps(which, row_scales[r]);
    const int64_t end = std::min((g + 1) * w.G, w.K);
    // one token: the group's products summed unscaled, then scaled once (one multiply per row and group instead of
    // one per 16 codes); more tokens share the scaled codes instead
    __m512 part[R];
    for (int r = 0; r < R; ++r) part[r] = _mm512_setzero_ps();
    for (int64_t c = g * w.G; c < end; c += 32) {
      __m512 lo[R], hi[R];  // int4: even / odd columns; int8: columns c..c+15 / c+16..c+31
      for (int r = 0; r < R; ++r) {
        // the same bytes of the rows one block ahead: a single core's hardware prefetch alone leaves DRAM idle
        _mm_prefetch(reinterpret_cast<const char*>(q[r] + kPrefetchRows * row_bytes + (w.bits == 4 ? c / 2 : c)),
                     _MM_HINT_T0);
        if (w.bits == 4) {
          const __m512i codes = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q[r] + c / 2)));
          lo[r] = _mm512_cvtepi32_ps(_mm512_and_si512(codes, low4));
          hi[r] = _mm512_cvtepi32_ps(_mm512_srli_epi32(codes, 4));
        } else {
          const __m128i* p = reinterpret_cast<const __m128i*>(q[r] + c);
          lo[r] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p)));
          hi[r] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p + 1)));
        }
        if (T > 1) {
          lo[r] = _mm512_mul_ps(lo[r], d[r]);
          hi[r] = _mm512_mul_ps(hi[r], d[r]);
        }
      }
      if (T == 1) {
        const __m512 x0 = _mm512_loadu_ps(x + c), x1 = _mm512_loadu_ps(x + c + 16);
        for (int r = 0; r < R; ++r) part[r] = _mm512_fmadd_ps(hi[r], x1, _mm512_fmadd_ps(lo[r], x0, part[r]));
      } else {
        for (int t = 0; t < T; ++t) {
          const __m512 x0 = _mm512_loadu_ps(x + t * w.K + c), x1 = _mm512_loadu_ps(x + t * w.K + c + 16);
          for (int r = 0; r < R; ++r) acc[r][t] = _mm512_fmadd_ps(hi[r], x1, _mm512_fmadd_ps(lo[r], x0, acc[r][t]));
        }
      }
    }
    if (T == 1)
      for (int r = 0; r < R; ++r) acc[r][0] = _mm512_fmadd_ps(part[r], d[r], acc[r][0]);
  }
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) {
      float out = _mm512_reduce_add_ps(acc[r][t]);
      if (w.mins) out += group_dot(w, w.mins, n + r, xsum + t * groups, groups);
      y[t * N + n + r] = bias ? out + bias[n + r] : out;
    }
  }
}

// int8 codes in groups of 16 (GGUF's Q6_K): each 32-column chunk spans two groups, each half scaled by its own
template <int R, int T>
FF_AVX512 void rows16_avx512(const QuantView& w, const float* x, const float* xsum, const float* bias, float* y,
                             int64_t n, int64_t N) {
  const int64_t groups = w.K / 16;
  const uint8_t* q[R];
  for (int r = 0; r < R; ++r) q[r] = w.q + (n + r) * w.K;
  __m512 acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
  __m512 row_scales[R];
  for (int64_t c = 0; c < w.K; c += 32) {
    const int64_t g = c / 16;
    if (g % 16 == 0)
      for (int r = 0; r < R; ++r)
        row_scales[r] = load16(w, w.scales, (n + r) * groups + g, std::min<int64_t>(16, groups - g));
    const __m512i first = _mm512_set1_epi32(static_cast<int>(g % 16));
    const __m512i second = _mm512_set1_epi32(static_cast<int>(g % 16 + 1));
    __m512 lo[R], hi[R];
    for (int r = 0; r < R; ++r) {
      _mm_prefetch(reinterpret_cast<const char*>(q[r] + kPrefetchRows * w.K + c), _MM_HINT_T0);
      const __m128i* p = reinterpret_cast<const __m128i*>(q[r] + c);
      lo[r] = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p))),
                            _mm512_permutexvar_ps(first, row_scales[r]));
      hi[r] = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p + 1))),
                            _mm512_permutexvar_ps(second, row_scales[r]));
    }
    for (int t = 0; t < T; ++t) {
      const __m512 x0 = _mm512_loadu_ps(x + t * w.K + c), x1 = _mm512_loadu_ps(x + t * w.K + c + 16);
      for (int r = 0; r < R; ++r) acc[r][t] = _mm512_fmadd_ps(hi[r], x1, _mm512_fmadd_ps(lo[r], x0, acc[r][t]));
    }
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) {
      float out = _mm512_reduce_add_ps(acc[r][t]);
      if (w.mins) out += group_dot(w, w.mins, n + r, xsum + t * groups, groups);
      y[t * N + n + r] = bias ? out + bias[n + r] : out;
    }
}

template <int R>
FF_AVX512 void rows_tokens_avx512(const QuantView& w, const float* x, int64_t M, const float* xsum,
                                  const float* bias, float* y, int64_t n, int64_t N) {
  const int64_t groups = w.groups();
  for (int64_t t = 0; t < M; t += kTokenBlock) {  // the rows' bytes stay in L1 across token blocks
    const float* xt = x + t * w.K;
    const float* st = xsum ? xsum + t * groups : nullptr;
    float* yt = y + t * N;
    const bool g16 = w.G == 16;
    switch (std::min<int64_t>(kTokenBlock, M - t)) {
      case 1: (g16 ? rows16_avx512<R, 1> : rows_avx512<R, 1>)(w, xt, st, bias, yt, n, N); break;
      case 2: (g16 ? rows16_avx512<R, 2> : rows_avx512<R, 2>)(w, xt, st, bias, yt, n, N); break;
      case 3: (g16 ? rows16_avx512<R, 3> : rows_avx512<R, 3>)(w, xt, st, bias, yt, n, N); break;
      default: (g16 ? rows16_avx512<R, 4> : rows_avx512<R, 4>)(w, xt, st, bias, yt, n, N); break;
    }
  }
}

FF_AVX512 void gemm_rows_avx512(const QuantView& w, const float* x, int64_t M, const float* xsum,
                                const float* bias, float* y, int64_t n0, int64_t n1, int64_t N) {
  // at most kMaxGemvTokens tokens come here: their activations stay in L1 while the rows pass by
  int64_t n = n0;
  for (; n + kRowBlock <= n1; n += kRowBlock) rows_tokens_avx512<kRowBlock>(w, x, M, xsum, bias, y, n, N);
  for (; n < n1; ++n) rows_tokens_avx512<1>(w, x, M, xsum, bias, y, n, N);
}

FF_AVX512 void dequantize_rows_avx512(const QuantView& w, float* out, int64_t n0, int64_t n1) {
  const int64_t groups = w.groups();
  const int64_t row_bytes = w.row_bytes();
  const __m512i low4 = _mm512_set1_epi32(15);
  // (low nibbles = even columns, high nibbles = odd columns) -> natural order
  const __m512i first = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i second = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* q = w.q + n * row_bytes;
    float* o = out + n * w.K;
    for (int64_t g = 0; g < groups; ++g) {
      const __m512 d = _mm512_set1_ps(scale_at(w, w.scales, n * groups + g));
      const __m512 mn = _mm512_set1_ps(w.mins ? scale_at(w, w.mins, n * groups + g) : 0.f);
      for (int64_t c = g * w.G; c < std::min((g + 1) * w.G, w.K); c += 32) {
        if (w.bits == 4) {
          const __m512i codes = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + c / 2)));
          const __m512 lo = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_and_si512(codes, low4)), d, mn);
          const __m512 hi = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(codes, 4)), d, mn);
          _mm512_storeu_ps(o + c, _mm512_permutex2var_ps(lo, first, hi));
          _mm512_storeu_ps(o + c + 16, _mm512_permutex2var_ps(lo, second, hi));
        } else {  // 16 columns at a time: groups of 16 (Q6_K) end every 16
          for (int h = 0; h < 32 && c + h < std::min((g + 1) * w.G, w.K); h += 16) {
            const __m512i codes = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + c + h)));
            _mm512_storeu_ps(o + c + h, _mm512_fmadd_ps(_mm512_cvtepi32_ps(codes), d, mn));
          }
        }
      }
    }
  }
}

#endif  // FF_X86

bool use_avx512() {
  static const bool yes = avx512_usable(false);
  return yes;
}

void dequantize_rows(const QuantView& w, float* out, int64_t n0, int64_t n1) {
#if FF_X86
  if (use_avx512()) return dequantize_rows_avx512(w, out, n0, n1);
#endif
  dequantize_rows_portable(w, out, n0, n1);
}

void gemm_rows(const QuantView& w, const float* x, int64_t M, const float* xsum, const float* bias, float* y,
               int64_t n0, int64_t n1, int64_t N) {
#if FF_X86
  if (use_avx512()) return gemm_rows_avx512(w, x, M, xsum, bias, y, n0, n1, N);
#endif
  gemm_rows_portable(w, x, M, xsum, bias, y, n0, n1, N);
}

// The activations as the kernels read them (int4: every 32 columns reordered to (even, odd)) and, for formats
// with mins, the sum of each group of columns per token. Plain loops: at one token the work is a few hundred
// floats, and torch ops here would cost more in dispatch than the copy itself.
void prepare_activations(const float* x, int64_t M, const QuantView& w, float* xp, float* xsum) {
  const int64_t groups = w.groups();
  for (int64_t m = 0; m < M; ++m) {
    const float* xm = x + m * w.K;
    if (xp) {
      float* o = xp + m * w.K;
      for (int64_t c = 0; c < w.K; c += 32)
        for (int j = 0; j < 16; ++j) {
          o[c + j] = xm[c + 2 * j];
          o[c + 16 + j] = xm[c + 2 * j + 1];
        }
    }
    if (xsum)
      for (int64_t g = 0; g < groups; ++g) {
        float acc[kLanes] = {0};
        for (int64_t k = g * w.G; k < std::min((g + 1) * w.G, w.K); k += kLanes)
          for (int j = 0; j < kLanes; ++j) acc[j] += xm[k + j];
        float total = 0;
        for (int j = 0; j < kLanes; ++j) total += acc[j];
        xsum[m * groups + g] = total;
      }
  }
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
  const int64_t M = x2d.size(0), N = w.N, groups = w.groups();
  const float* b = bias.has_value() ? bias->data_ptr<float>() : nullptr;
  if (M > kMaxGemvTokens) {
    // prefill: torch's GEMM on float rows dequantized a panel at a time, each thread into its own small buffer that
    // stays in cache and is reused (the whole float weight, made per call, would be megabytes of fresh pages to
    // fault in and write). One parallel region per call: each thread dequantizes its panels and multiplies them on
    // its own (a GEMM inside the region runs on one thread), instead of two regions and their barriers per panel.
    const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
    const int64_t fits = std::max<int64_t>(16, (int64_t{1} << 18) / std::max<int64_t>(w.K, 1));  // ~1 MB of floats
    int64_t count = std::max<int64_t>(threads, (N + fits - 1) / fits);
    count = (count + threads - 1) / threads * threads;  // whole rounds of panels: no thread left waiting
    const int64_t panel = (N + count - 1) / count;
    at::Tensor yt = at::empty({N, M}, x2d.options());  // y transposed: each panel's rows of it are contiguous
    const at::Tensor xt = x2d.t();
    const bool inference = c10::InferenceMode::is_enabled();  // worker threads start outside it: enter it there too
    at::parallel_for(0, count, 1, [&](int64_t p0, int64_t p1) {
      c10::InferenceMode guard(inference);
      thread_local std::vector<float> buffer;
      buffer.resize(static_cast<size_t>(panel * w.K));
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t n0 = p * panel, rows = std::min(panel, N - n0);
        if (rows <= 0) continue;
        dequantize_rows(w.rows(n0, rows), buffer.data(), 0, rows);
        at::Tensor out = yt.narrow(0, n0, rows);
        at::mm_out(out, at::from_blob(buffer.data(), {rows, w.K}, x2d.options()), xt);
      }
    });
    at::Tensor y = yt.t().contiguous();
    if (bias.has_value()) y.add_(*bias);
    return y;
  }
  at::Tensor y = at::empty({M, N}, x2d.options());
  // one scratch buffer: the reordered activations (int4) and the group sums (formats with mins)
  const int64_t reorder = w.bits == 4 ? M * w.K : 0, sums = w.mins ? M * groups : 0;
  at::Tensor scratch = at::empty({reorder + sums}, x2d.options());
  float* xp = reorder ? scratch.data_ptr<float>() : nullptr;
  float* xsum = sums ? scratch.data_ptr<float>() + reorder : nullptr;
  prepare_activations(x2d.data_ptr<float>(), M, w, xp, xsum);
  const float* xd = xp ? xp : x2d.data_ptr<float>();
  float* yd = y.data_ptr<float>();
  // over blocks of rows (the AVX-512 kernel's unit); grain: enough rows that a thread's share is worth waking it
  const int64_t blocks = (N + kRowBlock - 1) / kRowBlock;
  const int64_t grain = std::max<int64_t>(2, (1 << 15) / kRowBlock / std::max<int64_t>(w.K, 1));
  at::parallel_for(0, blocks, grain, [&](int64_t b0, int64_t b1) {
    gemm_rows(w, xd, M, xsum, b, yd, b0 * kRowBlock, std::min(b1 * kRowBlock, N), N);
  });
  return y;
}

}  // namespace fastformers

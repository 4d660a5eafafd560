// int8 GEMM for many tokens (an encoder's batch, a prompt) on weights repacked for it, in two modes.
//   Blocks: QuantizedWeight method "blockwise_a8" with 8-bit codes in groups of 32 (fastformers' format, GGUF's Q8_0),
//   activations quantized per token and block of 32 columns as the reference does (sx = max|x| / 127, at least the
//   smallest normal float; xq = round(x / sx) in [-127, 127]), then
//     y[t, n] = sum_b sx[t, b] * scale[n, b] * sum_{k in b} q[n, k] xq[t, k] (+ bias[n]).
//   Per token (W8A8): one scale per output and activations quantized per token, so
//     y[t, n] = sx[t] * scale[n] * sum_k q[n, k] xq[t, k] (+ bias[n]).
// The integer sums are exact. quant_linear_a8.cpp computes the blocks mode for a few tokens from the weight as stored
// (a dot product per row and token); here the outputs lie across the vector lanes, so that a tile of 6 tokens x 32
// outputs keeps 12 int32 and 12 float accumulators in registers and each weight byte loaded serves 6 tokens.
//
// The packed weight (ops/encoder.py's pack_blockwise8 / pack_w8a8; N and K multiples of 32): codes + 128 as unsigned
// bytes laid out [N / 16][K / 4][16 outputs][4 columns] -- the operand order of vpdpbusd, which sums 4 unsigned x
// signed byte products into each int32 lane -- with the scales transposed to (K / 32, N), or per output (N). The +128
// is taken back per token and block (or token): 128 * sum(xq) subtracted from every output's int32 sum.
// CPUs with AVX2 but no VNNI run the per-token mode on the same packed weight with int16 products (tile_avx2): the
// codes widened to int16 as they are loaded, the activations quantized to int16 codes, vpmaddwd summing pairs of
// products into int32 (exact, as vpdpbusd's). Measured on an AVX2-only EPYC (L1-resident tiles, one core): int16
// products 21.7 G per second, float32 FMAs 22.0 G, AVX2's byte products (vpmaddubsw with the sign moved, plus
// vpmaddwd to widen) 16.3 G. Its blocks mode (per block of 32, 4-token tiles) ran MiniLM 8 x 128 at 493 ms against
// 365 ms for gemm_f32.cpp's widened int8 panels, which that mode uses on AVX2 CPUs instead.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "avx2.h"
#include "gemm_a8.h"
#include "quant_x86.h"

namespace fastformers {

namespace {
// FASTFORMERS_CPU_NO_AVX512=1 runs the AVX2 tiles on an AVX-512 CPU (its tests run them everywhere)
bool vnni_usable() {
#if FF_X86
  static const bool usable = avx512_usable(true) && !std::getenv("FASTFORMERS_CPU_NO_AVX512");
  return usable;
#else
  return false;
#endif
}
}  // namespace

bool gemm_a8_usable(bool per_token) {
#if FF_X86
  static const bool avx2 = avx2_usable();
  return vnni_usable() || (per_token && avx2);
#else
  (void)per_token;
  return false;
#endif
}

#if FF_X86
namespace {

constexpr float kTiny = 1.17549435e-38f;  // the smallest normal float: the scale of a block of zeros
constexpr int kTile = 6;  // tokens per tile: 12 int32 and 12 float accumulators, 2 weight registers

// `count` blocks of 32 floats -> int8 codes, their scales and 128 * sum(codes), the reference's arithmetic: sx =
// max(max|x| / 127, smallest normal), xq = round half to even of x / sx (within [-127, 127] by construction).
FF_VNNI void quantize_blocks(const float* x, int64_t count, int8_t* xq, float* sx, int32_t* corr) {
  const __m512 tiny = _mm512_set1_ps(kTiny);
  for (int64_t b = 0; b < count; ++b) {
    const __m512 lo = _mm512_loadu_ps(x + b * 32), hi = _mm512_loadu_ps(x + b * 32 + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(lo), _mm512_abs_ps(hi)));
    const __m512 s = _mm512_max_ps(_mm512_set1_ps(amax / 127.f), tiny);
    const __m512i qlo = _mm512_cvtps_epi32(_mm512_roundscale_ps(_mm512_div_ps(lo, s), _MM_FROUND_TO_NEAREST_INT |
                                                                                          _MM_FROUND_NO_EXC));
    const __m512i qhi = _mm512_cvtps_epi32(_mm512_roundscale_ps(_mm512_div_ps(hi, s), _MM_FROUND_TO_NEAREST_INT |
                                                                                          _MM_FROUND_NO_EXC));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(xq + b * 32), _mm512_cvtepi32_epi8(qlo));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(xq + b * 32 + 16), _mm512_cvtepi32_epi8(qhi));
    sx[b] = _mm512_cvtss_f32(s);
    corr[b] = 128 * _mm512_reduce_add_epi32(_mm512_add_epi32(qlo, qhi));
  }
}

// Each of `rows` tokens of K floats -> int8 codes with one scale per token (W8A8's activations: sx = max(max|x| / 127,
// smallest normal), xq = round half to even of x / sx) and 128 * sum(codes).
FF_VNNI void quantize_tokens(const float* x, int64_t rows, int64_t K, int8_t* xq, float* sx, int32_t* corr) {
  const __m512 tiny = _mm512_set1_ps(kTiny);
  for (int64_t t = 0; t < rows; ++t) {
    const float* xr = x + t * K;
    __m512 amax = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; k += 16) amax = _mm512_max_ps(amax, _mm512_abs_ps(_mm512_loadu_ps(xr + k)));
    const __m512 s = _mm512_max_ps(_mm512_set1_ps(_mm512_reduce_max_ps(amax) / 127.f), tiny);
    __m512i sum = _mm512_setzero_si512();
    for (int64_t k = 0; k < K; k += 16) {
      const __m512i q = _mm512_cvtps_epi32(_mm512_roundscale_ps(_mm512_div_ps(_mm512_loadu_ps(xr + k), s),
                                                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(xq + t * K + k), _mm512_cvtepi32_epi8(q));
      sum = _mm512_add_epi32(sum, q);
    }
    sx[t] = _mm512_cvtss_f32(s);
    corr[t] = 128 * _mm512_reduce_add_epi32(sum);
  }
}

// T tokens (1..kTile) x 32 outputs (n-blocks nb, nb + 1) over all K columns. BLOCKS: scales per block of 32 on both
// sides (scales_t (K / 32, N), sx and corr per token and block), each block's int32 sums scaled into float ones.
// Otherwise one scale per output and per token (W8A8: scales (N), sx and corr per token), the int32 sums carried
// over all K and scaled once.
template <int T, bool BLOCKS = true>
FF_VNNI void tile(const uint8_t* packed, const float* scales_t, int64_t N, int64_t K, const int8_t* xq,
                  const float* sx, const int32_t* corr, int64_t t0, int64_t nb, const float* bias, float* y) {
  const int64_t steps = K / 4, blocks = K / 32;
  const uint8_t* w0 = packed + nb * steps * 64;
  const uint8_t* w1 = w0 + steps * 64;
  __m512 f[T][2];
  for (int t = 0; t < T; ++t) f[t][0] = f[t][1] = _mm512_setzero_ps();
  __m512i acc[T][2];  // each starts at -128 * sum(xq) of the block (or token): the codes' +128 taken back
  for (int64_t b = 0; b < blocks; ++b) {
    if (BLOCKS || b == 0)
      for (int t = 0; t < T; ++t)
        acc[t][0] = acc[t][1] = _mm512_set1_epi32(-corr[BLOCKS ? (t0 + t) * blocks + b : t0 + t]);
    // a constant trip count, unrolled in full: a loop over the steps left GCC copying the accumulators between
    // registers every step
    const uint8_t* wb0 = w0 + b * 8 * 64;
    const uint8_t* wb1 = w1 + b * 8 * 64;
#pragma GCC unroll 8
    for (int s = 0; s < 8; ++s) {
      const __m512i a0 = _mm512_loadu_si512(wb0 + s * 64), a1 = _mm512_loadu_si512(wb1 + s * 64);
#pragma GCC unroll 6
      for (int t = 0; t < T; ++t) {
        int32_t four;  // the token's 4 codes of this step (memcpy: no aliasing of int8 storage as int32)
        std::memcpy(&four, xq + (t0 + t) * K + b * 32 + s * 4, sizeof(four));
        const __m512i xb = _mm512_set1_epi32(four);
        acc[t][0] = _mm512_dpbusd_epi32(acc[t][0], a0, xb);
        acc[t][1] = _mm512_dpbusd_epi32(acc[t][1], a1, xb);
      }
    }
    if (!BLOCKS) continue;
    const __m512 s0 = _mm512_loadu_ps(scales_t + b * N + nb * 16);
    const __m512 s1 = _mm512_loadu_ps(scales_t + b * N + nb * 16 + 16);
    for (int t = 0; t < T; ++t) {
      const __m512 xs = _mm512_set1_ps(sx[(t0 + t) * blocks + b]);
      f[t][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[t][0]), _mm512_mul_ps(s0, xs), f[t][0]);
      f[t][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[t][1]), _mm512_mul_ps(s1, xs), f[t][1]);
    }
  }
  if (!BLOCKS) {
    const __m512 s0 = _mm512_loadu_ps(scales_t + nb * 16), s1 = _mm512_loadu_ps(scales_t + nb * 16 + 16);
    for (int t = 0; t < T; ++t) {
      const __m512 xs = _mm512_set1_ps(sx[t0 + t]);
      // (acc * sx) * scale, in the order of encoder_step.cpp's W8A8 path: the same floats, not a rounding apart
      f[t][0] = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc[t][0]), xs), s0);
      f[t][1] = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc[t][1]), xs), s1);
    }
  }
  for (int j = 0; j < 2; ++j) {
    const int64_t n = (nb + j) * 16;
    const __m512 bv = bias ? _mm512_loadu_ps(bias + n) : _mm512_setzero_ps();
    for (int t = 0; t < T; ++t) _mm512_storeu_ps(y + (t0 + t) * N + n, _mm512_add_ps(f[t][j], bv));
  }
}

// AVX2: `rows` tokens of K floats (K a multiple of 16) -> int16 codes, the scale and 128 * sum(codes) per token, the
// arithmetic of quantize_tokens.
FF_AVX2 void quantize_tokens_avx2(const float* x, int64_t rows, int64_t K, int16_t* xq, float* sx, int32_t* corr) {
  const __m256 sign = _mm256_set1_ps(-0.f);
  alignas(32) float lanes[8];
  alignas(32) int32_t ints[8];
  for (int64_t t = 0; t < rows; ++t) {
    const float* xt = x + t * K;
    __m256 top = _mm256_setzero_ps();
    for (int64_t k = 0; k < K; k += 8) top = _mm256_max_ps(top, _mm256_andnot_ps(sign, _mm256_loadu_ps(xt + k)));
    _mm256_store_ps(lanes, top);
    float amax = 0.f;
    for (int j = 0; j < 8; ++j) amax = std::max(amax, lanes[j]);
    const float scale = std::max(amax / 127.f, kTiny);
    const __m256 s = _mm256_set1_ps(scale);
    __m256i sum = _mm256_setzero_si256();
    for (int64_t k = 0; k < K; k += 16) {
      const __m256i q0 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(xt + k), s),
                                                            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
      const __m256i q1 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(xt + k + 8), s),
                                                            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
      sum = _mm256_add_epi32(sum, _mm256_add_epi32(q0, q1));
      // packs works within 128-bit lanes: (q0 0-3, q1 0-3 | q0 4-7, q1 4-7), put back in order
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(xq + t * K + k),
                          _mm256_permute4x64_epi64(_mm256_packs_epi32(q0, q1), 0xD8));
    }
    _mm256_store_si256(reinterpret_cast<__m256i*>(ints), sum);
    int32_t total = 0;
    for (int j = 0; j < 8; ++j) total += ints[j];
    sx[t] = scale;
    corr[t] = 128 * total;
  }
}

// AVX2 tile, W8A8: T tokens (1..6) x 8 outputs (half h of the 16 of n-block nb) over all K columns of the packed
// weight with int16 products (vpmaddwd: pairs of int16 products summed into int32 lanes, exact), then
// acc * sx * scale + bias. A step of the packed weight is 16 outputs x 4 columns of codes + 128; its half h is two
// 16-byte rows of 4 outputs x 4 columns, widened to int16, so each int32 lane sums 2 columns of one output; the
// token's 4 codes of the step, broadcast as int16 pairs, line up with them.
template <int T>
FF_AVX2 void tile_avx2(const uint8_t* packed, const float* scales, int64_t N, int64_t K, const int16_t* xq,
                       const float* sx, const int32_t* corr, int64_t t0, int64_t nb, int h, const float* bias,
                       float* y) {
  static_assert(T >= 1 && T <= 6, "tile rows");
  const int64_t steps = K / 4;
  const uint8_t* w = packed + nb * steps * 64 + h * 32;
  const int16_t* x0 = xq + t0 * K;
  // named accumulators (GCC kept an array's elements on the stack: gemm_f32.cpp's tile)
  __m256i c0a = _mm256_setzero_si256(), c0b = c0a, c1a = c0a, c1b = c0a, c2a = c0a, c2b = c0a, c3a = c0a, c3b = c0a,
          c4a = c0a, c4b = c0a, c5a = c0a, c5b = c0a;
  for (int64_t s = 0; s < steps; ++s) {
    const uint8_t* ws = w + s * 64;
    const __m256i wa = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(ws)));
    const __m256i wb = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(ws + 16)));
#define FF_TOKEN(i, a, b)                                                                        \
  if (T > i) {                                                                                   \
    int64_t four; /* the token's 4 int16 codes of this step (memcpy: no aliasing) */            \
    std::memcpy(&four, x0 + i * K + s * 4, sizeof(four));                                        \
    const __m256i xb = _mm256_set1_epi64x(four);                                                 \
    a = _mm256_add_epi32(a, _mm256_madd_epi16(xb, wa));                                          \
    b = _mm256_add_epi32(b, _mm256_madd_epi16(xb, wb));                                          \
  }
    FF_TOKEN(0, c0a, c0b)
    FF_TOKEN(1, c1a, c1b)
    FF_TOKEN(2, c2a, c2b)
    FF_TOKEN(3, c3a, c3b)
    FF_TOKEN(4, c4a, c4b)
    FF_TOKEN(5, c5a, c5b)
#undef FF_TOKEN
  }
  const __m256i a[6] = {c0a, c1a, c2a, c3a, c4a, c5a}, b[6] = {c0b, c1b, c2b, c3b, c4b, c5b};
  const int64_t n = nb * 16 + h * 8;
  const __m256 sw = _mm256_loadu_ps(scales + n);
  const __m256 bv = bias ? _mm256_loadu_ps(bias + n) : _mm256_setzero_ps();
  for (int t = 0; t < T; ++t) {
    // hadd: (a01, a23, b01, b23 | a45, a67, b45, b67) = outputs (0, 1, 4, 5 | 2, 3, 6, 7), put in order; the +128's
    // share, 128 * sum(codes), taken off
    const __m256i sums = _mm256_sub_epi32(_mm256_permute4x64_epi64(_mm256_hadd_epi32(a[t], b[t]), 0xD8),
                                          _mm256_set1_epi32(corr[t0 + t]));
    // (acc * sx) * scale + bias, in the order of the VNNI tile and encoder_step.cpp's W8A8 path
    const __m256 v = _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(sums), _mm256_set1_ps(sx[t0 + t])), sw);
    _mm256_storeu_ps(y + (t0 + t) * N + n, _mm256_add_ps(v, bv));
  }
}

FF_AVX2 void rows_avx2(const uint8_t* pp, const float* sp, int64_t N, int64_t K, const int16_t* xq, const float* sx,
                       const int32_t* corr, int64_t t0, int64_t t1, int64_t nb, int h, const float* bp, float* yp) {
  int64_t t = t0;
  for (; t + 6 <= t1; t += 6) tile_avx2<6>(pp, sp, N, K, xq, sx, corr, t, nb, h, bp, yp);
  switch (t1 - t) {
    case 5: tile_avx2<5>(pp, sp, N, K, xq, sx, corr, t, nb, h, bp, yp); break;
    case 4: tile_avx2<4>(pp, sp, N, K, xq, sx, corr, t, nb, h, bp, yp); break;
    case 3: tile_avx2<3>(pp, sp, N, K, xq, sx, corr, t, nb, h, bp, yp); break;
    case 2: tile_avx2<2>(pp, sp, N, K, xq, sx, corr, t, nb, h, bp, yp); break;
    case 1: tile_avx2<1>(pp, sp, N, K, xq, sx, corr, t, nb, h, bp, yp); break;
    default: break;
  }
}

// Threads split the 8-output halves; each goes through the tokens in blocks of ~128 KB of codes (its L2 cache).
void tiles_avx2(const uint8_t* pp, const float* sp, int64_t M, int64_t N, int64_t K, const int16_t* xq,
                const float* sx, const int32_t* corr, const float* bp, float* yp) {
  const int64_t block = std::max<int64_t>(6, (128 * 1024 / (2 * K)) / 6 * 6);
  at::parallel_for(0, N / 8, 1, [&](int64_t u0, int64_t u1) {
    for (int64_t t0 = 0; t0 < M; t0 += block)
      for (int64_t u = u0; u < u1; ++u)
        rows_avx2(pp, sp, N, K, xq, sx, corr, t0, std::min(M, t0 + block), u / 2, static_cast<int>(u % 2), bp, yp);
  });
}

}  // namespace

namespace {
template <bool BLOCKS>
void tiles(const uint8_t* pp, const float* sp, int64_t M, int64_t N, int64_t K, const int8_t* xq, const float* sx,
           const int32_t* corr, const float* bp, float* yp) {
  at::parallel_for(0, N / 32, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      int64_t t = 0;
      for (; t + kTile <= M; t += kTile) tile<kTile, BLOCKS>(pp, sp, N, K, xq, sx, corr, t, 2 * p, bp, yp);
      switch (M - t) {
        case 5: tile<5, BLOCKS>(pp, sp, N, K, xq, sx, corr, t, 2 * p, bp, yp); break;
        case 4: tile<4, BLOCKS>(pp, sp, N, K, xq, sx, corr, t, 2 * p, bp, yp); break;
        case 3: tile<3, BLOCKS>(pp, sp, N, K, xq, sx, corr, t, 2 * p, bp, yp); break;
        case 2: tile<2, BLOCKS>(pp, sp, N, K, xq, sx, corr, t, 2 * p, bp, yp); break;
        case 1: tile<1, BLOCKS>(pp, sp, N, K, xq, sx, corr, t, 2 * p, bp, yp); break;
        default: break;
      }
    }
  });
}
}  // namespace

void gemm_a8_cpu(const at::Tensor& x2d, const at::Tensor& packed, const at::Tensor& scales, const at::Tensor& bias,
                 at::Tensor& y, bool per_token) {
  TORCH_CHECK(gemm_a8_usable(per_token), "gemm_a8: this CPU has no AVX-512 VNNI", per_token ? " nor AVX2" : "");
  const int64_t M = x2d.size(0), K = x2d.size(1), N = packed.size(0), blocks = K / 32;
  // per token, the int32 sums run over all K: from -128 * sum(xq) on, |sum| <= (128 + 255) * 127 * K < 2^31
  TORCH_CHECK(!per_token || K <= 32768, "gemm_a8: W8A8 with more than 32768 input features (", K, ")");
  const int64_t groups = per_token ? 1 : blocks;  // activation scales per token
  // quantize the tokens: codes, scales and 128 * sum(codes) per block of 32 or per token (buffers kept per thread: no
  // page faults on every call; the worker threads get raw pointers: a thread_local named inside a lambda would be
  // their own)
  thread_local std::vector<int8_t> codes;
  thread_local std::vector<float> token_scales;
  thread_local std::vector<int32_t> sums;
  codes.resize(vnni_usable() ? M * K : 0);
  token_scales.resize(M * groups);
  sums.resize(M * groups);
  int8_t* const xq = codes.data();
  float* const sx = token_scales.data();
  int32_t* const corr = sums.data();
  const float* xp = x2d.data_ptr<float>();
  TORCH_CHECK(y.is_contiguous() && y.size(0) == M && y.size(1) == N && y.scalar_type() == at::kFloat,
              "gemm_a8: the output must be contiguous float32 (", M, ", ", N, ")");
  const uint8_t* pp = packed.data_ptr<uint8_t>();
  const float* sp = scales.data_ptr<float>();
  const float* bp = bias.defined() ? bias.data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  if (!vnni_usable()) {  // AVX2, per token: int16 codes
    thread_local std::vector<int16_t> wide_codes;
    wide_codes.resize(M * K);
    int16_t* const xw = wide_codes.data();
    at::parallel_for(0, M, 16, [&](int64_t m0, int64_t m1) {
      quantize_tokens_avx2(xp + m0 * K, m1 - m0, K, xw + m0 * K, sx + m0, corr + m0);
    });
    tiles_avx2(pp, sp, M, N, K, xw, sx, corr, bp, yp);
    return;
  }
  at::parallel_for(0, M, 16, [&](int64_t m0, int64_t m1) {
    if (per_token)
      quantize_tokens(xp + m0 * K, m1 - m0, K, xq + m0 * K, sx + m0, corr + m0);
    else
      quantize_blocks(xp + m0 * K, (m1 - m0) * blocks, xq + m0 * K, sx + m0 * blocks, corr + m0 * blocks);
  });
  if (per_token)
    tiles<false>(pp, sp, M, N, K, xq, sx, corr, bp, yp);
  else
    tiles<true>(pp, sp, M, N, K, xq, sx, corr, bp, yp);
}
#else
void gemm_a8_cpu(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, at::Tensor&, bool) {
  TORCH_CHECK(false, "gemm_a8: not an x86-64 build");
}
#endif

}  // namespace fastformers

// Quantized linear with int8 activations (QuantizedWeight method "blockwise_a8", llama.cpp's scheme): the weight as
// stored (int8 / int4 codes, a scale and optionally a min per group of G columns, G a multiple of 32), the
// activations quantized at run time per token and block of 32 columns, x ~ xq * sx with sx = max|x| / 127 and xq =
// round(x / sx) in [-127, 127]. Then
//   y[n] = sum_g scale[n, g] * sum_{b in g} sx_b * sum_{k in b} q[n, k] xq[k]
//        + sum_g min[n, g] * sum_{b in g} sx_b * sum_{k in b} xq[k]
// i.e. exactly x' @ W^T for the dequantized activations x' = xq * sx and the dequantized weight: the integer sums are
// exact, only the float sums around them round.
//
// AVX-512 VNNI (vpdpbusd: 64 unsigned x signed byte products summed in fours into 16 int32 lanes per instruction)
// replaces the float path's conversion of every code to float, which bounds that kernel on small CPUs. int4 codes are
// unsigned already; int8 codes are made unsigned by adding 128 (q + 128 in [0, 255]), and 128 * sum(xq) is taken back
// per block. Elsewhere (or with FASTFORMERS_CPU_PORTABLE=1), the same integer sums in plain loops. More than 16 tokens
// (prefill): the dequantized activations x' through the float kernel's GEMM path.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "quant_linear.h"
#include "quant_x86.h"

namespace fastformers {
namespace {

constexpr float kTiny = 1.17549435e-38f;  // the smallest normal float: the scale of a block of zeros

// The activations of M tokens, quantized: per token, Kp = K rounded up to 64 columns (the padding is zeros)
//   xq    int8 codes, in the kernels' order per 64 columns (int4: even columns of the two 32-blocks, then their odd
//         columns, the order nibbles come out of 32 bytes; int8: natural)
//   lane  per 64 columns the 16 float scales of the dot product's int32 lanes (sx of the block each lane sums)
//   sx    per block of 32 its scale
//   gsum  per group of G columns the sum over its blocks of sx * sum(xq) (the mins' and the int8 offset's share)
struct Activations {
  int64_t K, Kp, blocks, groups;
  std::vector<int8_t> xq;
  std::vector<float> lane, sx, gsum;
};

Activations quantize(const float* x, int64_t M, int64_t K, int bits, int64_t G) {
  Activations a;
  a.K = K;
  a.Kp = (K + 63) / 64 * 64;
  a.blocks = K / 32;
  a.groups = (K + G - 1) / G;
  a.xq.assign(M * a.Kp, 0);
  a.lane.assign(M * (a.Kp / 64) * 16, 0.f);
  a.sx.assign(M * a.blocks, 0.f);
  a.gsum.assign(M * a.groups, 0.f);
  for (int64_t m = 0; m < M; ++m) {
    const float* xm = x + m * K;
    int8_t* q = a.xq.data() + m * a.Kp;
    for (int64_t b = 0; b < a.blocks; ++b) {
      float amax = 0.f;
      for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(xm[b * 32 + j]));
      // the reference's arithmetic: sx = max|x| / 127 (at least the smallest normal float), xq = round(x / sx)
      const float s = std::max(amax / 127.f, kTiny);
      int sum[2] = {0, 0};  // per 16 columns: groups of 16 (Q6_K) end there
      const int64_t chunk = b / 2 * 64, half = b % 2;
      for (int j = 0; j < 32; ++j) {
        const int v = static_cast<int>(std::nearbyint(std::min(std::max(xm[b * 32 + j] / s, -127.f), 127.f)));
        sum[j / 16] += v;
        // int4: column j of the block is nibble j % 2 of byte j / 2: even columns first, then odd
        const int64_t at = bits == 4 ? chunk + (j % 2) * 32 + half * 16 + j / 2 : b * 32 + j;
        q[at] = static_cast<int8_t>(v);
      }
      a.sx[m * a.blocks + b] = s;
      a.gsum[m * a.groups + b * 32 / G] += s * static_cast<float>(sum[0]);
      a.gsum[m * a.groups + (b * 32 + 16) / G] += s * static_cast<float>(sum[1]);
      float* lane = a.lane.data() + (m * (a.Kp / 64) + b / 2) * 16;
      for (int l = 0; l < 16; ++l)  // int4: lanes 0-3 and 8-11 sum block 2c, 4-7 and 12-15 block 2c+1; int8: 0-7, 8-15
        if ((bits == 4 ? (l / 4) % 2 : l / 8) == half) lane[l] = s;
    }
  }
  return a;
}

// ---- portable: the same integer sums in plain loops ---------------------------------------------------------------

void rows_portable(const QuantView& w, const Activations& a, int64_t M, const float* bias, float* y, int64_t n0,
                   int64_t n1, int64_t N) {
  const int64_t groups = w.groups(), row_bytes = w.row_bytes();
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* q = w.q + n * row_bytes;
    for (int64_t m = 0; m < M; ++m) {
      const int8_t* xq = a.xq.data() + m * a.Kp;
      const float* sx = a.sx.data() + m * a.blocks;
      float out = 0.f;
      for (int64_t b = 0; b < a.blocks; ++b) {
        int dot[2] = {0, 0};  // per 16 columns: groups of 16 (Q6_K) end there
        const int64_t chunk = b / 2 * 64, half = b % 2;
        for (int j = 0; j < 32; ++j) {
          const int64_t k = b * 32 + j;
          const int code = w.bits == 8 ? reinterpret_cast<const int8_t*>(q)[k] : (q[k / 2] >> (4 * (k & 1))) & 15;
          dot[j / 16] += code * xq[w.bits == 4 ? chunk + (j % 2) * 32 + half * 16 + j / 2 : k];
        }
        out += sx[b] * (w.scale(n * groups + b * 32 / w.G) * static_cast<float>(dot[0]) +
                        w.scale(n * groups + (b * 32 + 16) / w.G) * static_cast<float>(dot[1]));
      }
      if (w.mins)
        for (int64_t g = 0; g < groups; ++g) out += w.min(n * groups + g) * a.gsum[m * groups + g];
      y[m * N + n] = bias ? out + bias[n] : out;
    }
  }
}

// ---- AVX-512 VNNI ------------------------------------------------------------------------------------------------

#if FF_X86

// R rows x T tokens over 64 columns at a time: the rows' codes are loaded and made unsigned bytes once, each token's
// quantized activations once; every (row, token) runs one vpdpbusd, one conversion and one multiply-add per 64 columns.
template <int R, int T>
FF_VNNI void rows_vnni(const QuantView& w, const Activations& a, int64_t m0, const float* bias, float* y, int64_t n,
                       int64_t N) {
  const int64_t groups = w.groups(), row_bytes = w.row_bytes();
  const int64_t chunks = a.Kp / 64;
  const uint8_t* q[R];
  for (int r = 0; r < R; ++r) q[r] = w.q + (n + r) * row_bytes;
  __m512 acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
  const __m256i low4 = _mm256_set1_epi8(15);
  const __m512i offset = _mm512_set1_epi8(static_cast<char>(0x80));
  const __mmask16 second = w.bits == 4 ? 0xF0F0 : 0xFF00;  // the lanes that sum the chunk's second block
  // groups of 32 or 16 (GGUF's): each row's scales 16 groups (8 or 4 chunks) at a time, and per chunk one permute
  // puts its groups' scales on the lanes that sum them, instead of scalar loads, conversions and broadcasts. The
  // group of lane l: int4 (G 32): (l / 4) % 2 (the lanes interleave even and odd columns); int8: 4 l / G.
  const bool small_groups = w.G == 32 || w.G == 16;
  const __m512i lane_group =
      w.bits == 4 ? _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1)
      : w.G == 16 ? _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3)
                  : _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
  __m512 row_scales[R];
  for (int64_t c = 0; c < chunks; ++c) {
    const bool full = 64 * c + 64 <= w.K;
    const int64_t g0 = 64 * c / w.G, g1 = full ? (64 * c + 32) / w.G : g0;
    if (small_groups && g0 % 16 == 0)
      for (int r = 0; r < R; ++r)
        row_scales[r] = load16(w, w.scales, (n + r) * groups + g0, std::min<int64_t>(16, groups - g0));
    const __m512i which = _mm512_add_epi32(lane_group, _mm512_set1_epi32(static_cast<int>(g0 % 16)));
    __m512i codes[R];
    __m512 scale[R];
    for (int r = 0; r < R; ++r) {
      const uint8_t* p = q[r] + (w.bits == 4 ? 32 * c : 64 * c);
      _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetchRows * row_bytes), _MM_HINT_T0);
      if (w.bits == 4) {
        const __m256i b = full ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))
                               : _mm256_maskz_loadu_epi8(0xFFFF, p);
        const __m256i lo = _mm256_and_si256(b, low4), hi = _mm256_and_si256(_mm256_srli_epi16(b, 4), low4);
        codes[r] = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
      } else {
        const __m512i b = full ? _mm512_loadu_si512(p) : _mm512_maskz_loadu_epi8(0xFFFFFFFFull, p);
        codes[r] = _mm512_xor_si512(b, offset);  // q + 128 as an unsigned byte
      }
      if (small_groups) {
        scale[r] = _mm512_permutexvar_ps(which, row_scales[r]);
      } else {
        const int64_t s = (n + r) * groups;
        const __m512 s0 = _mm512_set1_ps(scale_at(w, w.scales, s + g0));
        scale[r] = g0 == g1 ? s0 : _mm512_mask_blend_ps(second, s0, _mm512_set1_ps(scale_at(w, w.scales, s + g1)));
      }
    }
    for (int t = 0; t < T; ++t) {
      const int64_t m = m0 + t;
      const __m512i xq = _mm512_loadu_si512(a.xq.data() + m * a.Kp + 64 * c);
      const __m512 lane = _mm512_loadu_ps(a.lane.data() + (m * chunks + c) * 16);
      for (int r = 0; r < R; ++r) {
        const __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), codes[r], xq);
        acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(scale[r], lane), acc[r][t]);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) {
      const int64_t m = m0 + t;
      const float* gsum = a.gsum.data() + m * groups;
      float out = _mm512_reduce_add_ps(acc[r][t]);
      if (w.bits == 8) out -= 128.f * group_dot(w, w.scales, n + r, gsum, groups);
      if (w.mins) out += group_dot(w, w.mins, n + r, gsum, groups);
      y[m * N + n + r] = bias ? out + bias[n + r] : out;
    }
}

template <int R>
FF_VNNI void rows_tokens_vnni(const QuantView& w, const Activations& a, int64_t M, const float* bias, float* y,
                              int64_t n, int64_t N) {
  for (int64_t m = 0; m < M; m += kTokenBlock) {
    switch (std::min<int64_t>(kTokenBlock, M - m)) {
      case 1: rows_vnni<R, 1>(w, a, m, bias, y, n, N); break;
      case 2: rows_vnni<R, 2>(w, a, m, bias, y, n, N); break;
      case 3: rows_vnni<R, 3>(w, a, m, bias, y, n, N); break;
      default: rows_vnni<R, 4>(w, a, m, bias, y, n, N); break;
    }
  }
}

FF_VNNI void gemm_rows_vnni(const QuantView& w, const Activations& a, int64_t M, const float* bias, float* y,
                            int64_t n0, int64_t n1, int64_t N) {
  int64_t n = n0;
  for (; n + kRowBlock <= n1; n += kRowBlock) rows_tokens_vnni<kRowBlock>(w, a, M, bias, y, n, N);
  for (; n < n1; ++n) rows_tokens_vnni<1>(w, a, M, bias, y, n, N);
}

#endif  // FF_X86

bool use_vnni() {
  static const bool yes = avx512_usable(true);
  return yes;
}

}  // namespace

const char* selected_a8_isa() { return use_vnni() ? "avx512-vnni" : "portable"; }

at::Tensor quant_linear_a8_cpu(const at::Tensor& x2d, const QuantView& w, const c10::optional<at::Tensor>& bias) {
  const int64_t M = x2d.size(0), N = w.N;
  if (M > kMaxGemvTokens) {  // prefill: the dequantized activations xq * sx through the float path's GEMM
    at::Tensor xd = at::empty({M, w.K}, x2d.options());
    const float* xp = x2d.data_ptr<float>();
    float* dp = xd.data_ptr<float>();
    at::parallel_for(0, M * (w.K / 32), 64, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const float* in = xp + b * 32;
        float amax = 0.f;
        for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(in[j]));
        const float s = std::max(amax / 127.f, kTiny);
        for (int j = 0; j < 32; ++j) dp[b * 32 + j] = std::nearbyint(std::min(std::max(in[j] / s, -127.f), 127.f)) * s;
      }
    });
    return quant_linear_cpu(xd, w, bias);
  }
  const Activations a = quantize(x2d.data_ptr<float>(), M, w.K, w.bits, w.G);
  at::Tensor y = at::empty({M, N}, x2d.options());
  float* yd = y.data_ptr<float>();
  const float* b = bias.has_value() ? bias->data_ptr<float>() : nullptr;
  const int64_t blocks = (N + kRowBlock - 1) / kRowBlock;
  const int64_t grain = std::max<int64_t>(2, (1 << 15) / kRowBlock / std::max<int64_t>(w.K, 1));
  at::parallel_for(0, blocks, grain, [&](int64_t b0, int64_t b1) {
    const int64_t n0 = b0 * kRowBlock, n1 = std::min(b1 * kRowBlock, N);
#if FF_X86
    if (use_vnni()) return gemm_rows_vnni(w, a, M, b, yd, n0, n1, N);
#endif
    rows_portable(w, a, M, b, yd, n0, n1, N);
  });
  return y;
}

}  // namespace fastformers

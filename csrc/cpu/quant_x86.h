#pragma once

// What the x86 quantized kernels (quant_linear.cpp, quant_linear_a8.cpp) share: the AVX-512 target attribute and the
// reading of scales / mins, float32 or float16 (converted by F16C). Functions of a wider target (AVX-512 VNNI) may
// inline these.

#include <algorithm>
#include <cstdint>
#include <cstdlib>

#include "quant_linear.h"

#if defined(__GNUC__) && defined(__x86_64__)
#define FF_X86 1
#include <immintrin.h>
#else
#define FF_X86 0
#endif

namespace fastformers {

// Whether the AVX-512 kernels can run on this CPU (with `vnni`: the VNNI ones); FASTFORMERS_CPU_PORTABLE=1 says no.
inline bool avx512_usable(bool vnni) {
#if FF_X86
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c") && (!vnni || __builtin_cpu_supports("avx512vnni")) &&
         !std::getenv("FASTFORMERS_CPU_PORTABLE");
#else
  (void)vnni;
  return false;
#endif
}

}  // namespace fastformers

#if FF_X86
#define FF_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")))
#define FF_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c")))

namespace fastformers {

// a mask of the first `count` of 16 lanes (count >= 16: all)
FF_AVX512 inline __mmask16 first_lanes(int64_t count) {
  return count >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << count) - 1);
}

// p[i] of a scales / mins array as a float
FF_AVX512 inline float scale_at(const QuantView& w, const void* p, int64_t i) {
  return w.half ? _cvtsh_ss(static_cast<const uint16_t*>(p)[i]) : static_cast<const float*>(p)[i];
}

// p[i .. i + count) of a scales / mins array (count <= 16) as 16 floats, zeros after count
FF_AVX512 inline __m512 load16(const QuantView& w, const void* p, int64_t i, int64_t count) {
  const __mmask16 m = first_lanes(count);
  if (w.half) return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(p) + i));
  return _mm512_maskz_loadu_ps(m, static_cast<const float*>(p) + i);
}

// sum over g < groups of p[row * groups + g] * coef[g] (a row's mins or scales against per-group sums of a token)
FF_AVX512 inline float group_dot(const QuantView& w, const void* p, int64_t row, const float* coef, int64_t groups) {
  __m512 acc = _mm512_setzero_ps();
  for (int64_t g = 0; g < groups; g += 16) {
    const int64_t count = std::min<int64_t>(16, groups - g);
    acc = _mm512_fmadd_ps(load16(w, p, row * groups + g, count), _mm512_maskz_loadu_ps(first_lanes(count), coef + g),
                          acc);
  }
  return _mm512_reduce_add_ps(acc);
}

}  // namespace fastformers
#endif  // FF_X86

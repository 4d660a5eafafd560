#pragma once

// What the AVX2 + FMA kernels (encoder_step.cpp's attention, gemm_f32.cpp) share: the target attribute, e^x for
// x <= 0 and lane masks, 8 floats at a time.

#include <algorithm>
#include <cstdint>
#include <cstdlib>

#include "quant_x86.h"

#if FF_X86
namespace fastformers {

#define FF_AVX2 __attribute__((target("avx2,fma")))

// Whether this CPU has AVX2 and FMA (and FASTFORMERS_CPU_PORTABLE=1 is not set).
inline bool avx2_usable() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && !std::getenv("FASTFORMERS_CPU_PORTABLE");
}

// e^x for x <= 0, 8 at a time: encoder_step.cpp's exp_nonpositive16's arithmetic, with 2^n put into the exponent bits (x >= -87 keeps
// n >= -126, a normal float).
FF_AVX2 inline __m256 exp_nonpositive8(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fmadd_ps(n, _mm256_set1_ps(2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.f)));
  const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
}

// lanes j < count of 8 (count >= 8: all), as a maskload / maskstore mask
FF_AVX2 inline __m256i first_lanes8(int64_t count) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(std::min<int64_t>(count, 8))), lane);
}

}  // namespace fastformers
#endif  // FF_X86

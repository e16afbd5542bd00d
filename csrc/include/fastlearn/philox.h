// Counter-based Gaussian noise, defined bit for bit as Triton's tl.randint4x / tl.randn4x
// (triton/language/random.py): Philox4x32-10 with key (seed lo, seed hi) and counter
// (q lo, q hi, 0, 0), each 32-bit output turned into a float in [0, 1) by
// uint_to_uniform_float, pairs turned into normals by Box-Muller. C++ kernels and Triton
// kernels that follow noise_counter_to_group below draw the same numbers on CPU and GPU.
#pragma once

#include <cstdint>

#include "fastlearn/common.h"
#include "fastlearn/math.h"

// Host code inlines these into its `#pragma omp simd` loops (a call would stop vectorisation).
#if defined(__CUDACC__)
#define FL_NOISE_INLINE FL_HOST_DEVICE
#else
#define FL_NOISE_INLINE inline __attribute__((always_inline))
#endif

namespace fl {

// The noise layout shared with kernels/triton/diffusion_step.py. Element i of a flattened
// tensor drawn at `offset` has counter c = offset + i. Counters come in tiles of
// kNoiseTile: tile t = c / kNoiseTile holds kNoiseTile / 4 Philox groups, and lane k of
// group j of the tile (k in 0..3) goes to counter t * kNoiseTile + k * kNoiseTile / 4 + j.
// One Philox call thus feeds four contiguous runs of elements, which keeps both the SIMD
// loop here and the Triton program's loads contiguous.
constexpr int64_t kNoiseTile = 2048;
constexpr int64_t kNoiseGroups = kNoiseTile / 4;

// Philox4x32-10 (Salmon et al. 2011), rounds and key schedule as in Random123 and Triton.
// Written on plain integers so `#pragma omp simd` loops over groups vectorise.
FL_NOISE_INLINE void philox4x32_10(uint32_t& c0, uint32_t& c1, uint32_t& c2, uint32_t& c3, uint32_t k0,
                                  uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c0;
    const uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * c2;
    const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
    const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
    c1 = static_cast<uint32_t>(p1);
    c3 = static_cast<uint32_t>(p0);
    c0 = n0;
    c2 = n2;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
}

// tl.uint_to_uniform_float for uint32: reinterpret as int32, fold negatives with ~x, scale
// (int32 -> float32 conversion rounds to nearest, then a float32 multiply). In [0, 1).
FL_NOISE_INLINE float uint_to_uniform_float(uint32_t x) {
  int32_t i = static_cast<int32_t>(x);
  i = i < 0 ? ~i : i;
  return static_cast<float>(i) * 4.6566127342e-10f;
}

// log(x) for a normal float32 x, within about 1 ulp (no libm, so `#pragma omp simd` loops
// vectorise it). x = 2^e m with m in [sqrt(1/2), sqrt(2)), f = m - 1 (exact); with
// s = f / (2 + f), log(1 + f) = 2 atanh(s) = f - s (f - R), R = 2s^2/3 + 2s^4/5 + 2s^6/7 +
// 2s^8/9 (|s| <= 0.1716: truncation below 1e-9 relative); f is exact and the correction is
// at most a sixth of it, so the rounding of s barely shows. ln 2 is split hi + lo so e ln2_hi
// is exact.
FL_NOISE_INLINE float log_f32(float x) {
  const int32_t b = float_bits(x);
  int32_t e = ((b >> 23) & 0xff) - 127;
  float m = bits_float((b & 0x007fffff) | 0x3f800000);  // [1, 2)
  const bool big = m > 1.41421356f;
  m = big ? m * 0.5f : m;  // exact
  e += big ? 1 : 0;
  const float f = m - 1.0f;  // exact (Sterbenz)
  const float s = f / (2.0f + f);
  const float s2 = s * s;
  float r = 2.0f / 9.0f;
  r = r * s2 + 2.0f / 7.0f;
  r = r * s2 + 2.0f / 5.0f;
  r = r * s2 + 2.0f / 3.0f;
  r = r * s2;
  const float ef = static_cast<float>(e);
  return ef * 0.693145751953125f + ((f - s * (f - r)) + ef * 1.428606765330187045e-06f);
}

// sin and cos of a float32 angle x in [0, 2^16), each within about 1 ulp (no libm). Cody-Waite
// reduction by the nearest multiple q of pi/2 (pi/2 in three parts, the first with 8
// significant bits so q * part is exact; q read from the low mantissa bits after adding
// 1.5 * 2^23, no float-to-int conversion), then Taylor series to r^9 and r^10 on |r| <= pi/4
// (truncation below 2e-9).
FL_NOISE_INLINE void sincos_f32(float x, float& sin_out, float& cos_out) {
  constexpr float kShift = 12582912.0f;  // 1.5 * 2^23
  const float t = x * 0.636619772f + kShift;
  const float q = t - kShift;
  const int32_t quadrant = float_bits(t) & 3;
  float r = x - q * 1.5703125f;
  r = r - q * 4.837512969970703125e-4f;
  r = r - q * 7.549789948768648e-8f;
  const float r2 = r * r;
  float sp = 1.0f / 362880.0f;
  sp = sp * r2 - 1.0f / 5040.0f;
  sp = sp * r2 + 1.0f / 120.0f;
  sp = sp * r2 - 1.0f / 6.0f;
  const float sr = r + r * r2 * sp;
  float cp = -1.0f / 3628800.0f;
  cp = cp * r2 + 1.0f / 40320.0f;
  cp = cp * r2 - 1.0f / 720.0f;
  cp = cp * r2 + 1.0f / 24.0f;
  const float cr = 1.0f - 0.5f * r2 + r2 * r2 * cp;
  // sin and cos of r + quadrant * pi/2
  const float s = (quadrant & 1) ? cr : sr;
  const float c = (quadrant & 1) ? sr : cr;
  sin_out = (quadrant & 2) ? -s : s;
  cos_out = ((quadrant + 1) & 2) ? -c : c;
}

// tl.pair_uniform_to_normal: u1 clamped to 1e-7, r = sqrt(-2 log u1), angle 2 pi u2 (float32
// product, as Triton computes it); returns (r cos, r sin).
FL_NOISE_INLINE void pair_uniform_to_normal(float u1, float u2, float& n1, float& n2) {
  u1 = u1 < 1.0e-7f ? 1.0e-7f : u1;
  const float th = 6.283185307179586f * u2;
  const float r = __builtin_sqrtf(-2.0f * log_f32(u1));
  float s, c;
  sincos_f32(th, s, c);
  n1 = r * c;
  n2 = r * s;
}

// The four normals of Philox group q under `seed` (tl.randn4x(seed, q) with q an int64).
FL_NOISE_INLINE void randn4x(uint64_t seed, uint64_t q, float& n0, float& n1, float& n2, float& n3) {
  uint32_t c0 = static_cast<uint32_t>(q), c1 = static_cast<uint32_t>(q >> 32), c2 = 0, c3 = 0;
  philox4x32_10(c0, c1, c2, c3, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  pair_uniform_to_normal(uint_to_uniform_float(c0), uint_to_uniform_float(c1), n0, n1);
  pair_uniform_to_normal(uint_to_uniform_float(c2), uint_to_uniform_float(c3), n2, n3);
}

}  // namespace fl

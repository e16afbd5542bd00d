// exp for float64 inside `#pragma omp simd` loops (no libm call, so the loop vectorises);
// float32 uses fl::exp_f32 (fastlearn/math.h).
#pragma once

#include <cstdint>

#include "fastlearn/simd.h"

namespace fl::mixture {

// exp(x) to ~1 ulp for x in [-708, 709] (clamped outside; NaN passes through). Cody-Waite
// reduction x = n ln2 + r with |r| <= ln2/2 (ln2 split so n * hi is exact for |n| < 2^21),
// the degree-13 Taylor polynomial (truncation below 1e-17 relative), and 2^n built in the
// exponent field: adding 1.5 * 2^52 + 1023 leaves n + 1023 in the low mantissa bits.
FL_ALWAYS_INLINE double exp_f64(double x) {
  constexpr double kShift = 6755399441055744.0 + 1023.0;
  x = x < -708.0 ? -708.0 : x;
  x = x > 709.0 ? 709.0 : x;
  const double t = x * 1.4426950408889634 + kShift;
  const double n = t - kShift;
  double r = x - n * 0.6931471803691238;
  r = r - n * 1.9082149292705877e-10;
  double p = 1.0 / 6227020800.0;
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  const int64_t biased = __builtin_bit_cast(int64_t, t) - __builtin_bit_cast(int64_t, 6755399441055744.0);
  return p * __builtin_bit_cast(double, biased << 52);
}

}  // namespace fl::mixture

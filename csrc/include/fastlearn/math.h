// Scalar math written once for CPU and CUDA code. The CPU kernels call these inside
// `#pragma omp simd` loops, so they use only arithmetic, compares and bit moves (no libm).
#pragma once

#include <cstdint>
#include <cstring>

#include "fastlearn/common.h"

namespace fl {

FL_HOST_DEVICE int32_t float_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_int(x);
#else
  return __builtin_bit_cast(int32_t, x);  // memcpy would block vectorisation of simd loops
#endif
}
FL_HOST_DEVICE float bits_float(int32_t i) {
#if defined(__CUDA_ARCH__)
  return __int_as_float(i);
#else
  return __builtin_bit_cast(float, i);
#endif
}

// exp(x) for x <= 88.37, within 3 ulp; NaN in, NaN out; exp(-inf) = 0 and results below
// 2^-126 (x < -87.3) may flush to 0. Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, then a
// degree-5 near-minimax polynomial (relative error 2e-7 in float32). n + 127 is read from the
// low mantissa bits after adding 1.5*2^23 + 127, which rounds to the nearest integer without
// a float-to-int conversion; n = -127 gives a zero exponent field, i.e. exactly 0. Both clamps
// are written so a NaN passes through (they compile to single max/min instructions).
// exp_f32_clamped is the body, for xc already in [-88, 88.37] (or NaN); exp_f32 clamps first.
// exp_f32_poly is the body's arithmetic, written once for a float and for a SIMD vector of
// floats (vexp_nonpos, vec.h): it returns p ~ exp(r) and sets t, whose low mantissa bits hold
// n + 127 (t's bits minus those of 1.5 * 2^23); t's bits shifted left by 23 are those of 2^n.
#if defined(__GNUC__) && !defined(__CUDA_ARCH__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"  // vectors: always inlined, no call ABI (see vec.h)
#endif
template <typename F>
FL_HOST_DEVICE F exp_f32_poly(F xc, F& t) {
  constexpr float kShift = 12582912.0f + 127.0f;  // 1.5 * 2^23, plus the exponent bias
  t = xc * 1.44269504088896341f + kShift;
  const F n = t - kShift;
  F r = xc - n * 0.693145751953125f;
  r = r - n * 1.428606765330187045e-06f;
  F p = r * 8.2976203e-3f + 4.1915379e-2f;
  p = p * r + 1.6667575e-1f;
  p = p * r + 4.9998894e-1f;
  p = p * r + 9.9999970e-1f;
  p = p * r + 1.0000001f;
  return p;
}
#if defined(__GNUC__) && !defined(__CUDA_ARCH__)
#pragma GCC diagnostic pop
#endif

FL_HOST_DEVICE float exp_f32_clamped(float xc) {
  float t;
  const float p = exp_f32_poly(xc, t);
  // t's bits are those of 1.5 * 2^23 plus n + 127 (in [0, 254]); shifting left by 23 drops
  // the former (their lowest set bit is bit 22) and leaves 2^n's exponent field.
  return p * bits_float(static_cast<int32_t>(static_cast<uint32_t>(float_bits(t)) << 23));
}

FL_HOST_DEVICE float exp_f32(float x) {
  constexpr float kLo = -88.0f;          // n >= -127
  constexpr float kHi = 88.37626266f;    // n <= 127, so 2^n stays finite
  float xc = x < kLo ? kLo : x;
  xc = xc > kHi ? kHi : xc;
  return exp_f32_clamped(xc);
}

// exp(x) for x <= 0 (or NaN), one clamp fewer: softmax's exp(x - max) and similar. A positive
// x is outside its contract (it would overflow the exponent field for x > 88.37).
FL_HOST_DEVICE float exp_f32_nonpos(float x) {
  constexpr float kLo = -88.0f;
  return exp_f32_clamped(x < kLo ? kLo : x);
}

// Online softmax state: the running max m and the sum s of exp(x - m). Merging two states
// rescales the smaller-max sum; (-inf, 0) is the empty state.
struct MaxSum {
  float m;
  float s;
};
FL_HOST_DEVICE MaxSum merge_max_sum(MaxSum a, MaxSum b) {
  if (a.m < b.m) {
    MaxSum t = a;
    a = b;
    b = t;
  }
  if (b.m == bits_float(static_cast<int32_t>(0xff800000u))) return a;  // b empty or all -inf
  return MaxSum{a.m, a.s + b.s * exp_f32(b.m - a.m)};
}

}  // namespace fl

// Fixed-width SIMD values through GCC vector extensions: 32 bytes (4 doubles, 8 floats).
// Register-blocked micro-kernels are written once with these; inside an FL_MULTIVERSION
// driver the AVX2 clone turns them into ymm FMAs, the baseline clone into pairs of SSE ops.
#pragma once

#include <cstdint>

#include "fastlearn/math.h"
#include "fastlearn/simd.h"

// 32-byte vectors in the baseline clone trigger a note about an ABI change that does not
// concern us: these values never cross a non-inlined call boundary.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace fl {

template <typename T>
struct vec32;
template <>
struct vec32<float> {
  typedef float type __attribute__((vector_size(32)));
  typedef float unaligned __attribute__((vector_size(32), aligned(4), may_alias));
  static constexpr int width = 8;
};
template <>
struct vec32<double> {
  typedef double type __attribute__((vector_size(32)));
  typedef double unaligned __attribute__((vector_size(32), aligned(8), may_alias));
  static constexpr int width = 4;
};

template <typename T>
using vec_t = typename vec32<T>::type;
template <typename T>
constexpr int vec_width = vec32<T>::width;

template <typename T>
FL_ALWAYS_INLINE vec_t<T> vload(const T* p) {
  return *reinterpret_cast<const typename vec32<T>::unaligned*>(p);
}
template <typename T>
FL_ALWAYS_INLINE void vstore(T* p, vec_t<T> v) {
  *reinterpret_cast<typename vec32<T>::unaligned*>(p) = v;
}
template <typename T>
FL_ALWAYS_INLINE vec_t<T> vsplat(T x) {
  return vec_t<T>{} + x;
}
template <typename T>
FL_ALWAYS_INLINE T vsum(vec_t<T> v) {
  T s = 0;
  for (int l = 0; l < vec_width<T>; ++l) s += v[l];
  return s;
}

// exp of each lane for lanes <= 0 (or NaN): exp_f32_nonpos (math.h) lane by lane, on the same
// exp_f32_poly.
FL_ALWAYS_INLINE vec_t<float> vexp_nonpos(vec_t<float> x) {
  typedef int32_t ivec __attribute__((vector_size(32)));
  using V = vec_t<float>;
  const V xc = x < -88.0f ? vsplat(-88.0f) : x;
  V t;
  const V p = exp_f32_poly(xc, t);
  const ivec biased = __builtin_bit_cast(ivec, t) - 0x4B400000;  // float_bits(1.5 * 2^23): n + 127
  return p * __builtin_bit_cast(V, biased << 23);
}

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

}  // namespace fl

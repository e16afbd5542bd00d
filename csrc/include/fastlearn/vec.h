// Fixed-width SIMD values through GCC vector extensions: 32 bytes (4 doubles, 8 floats).
// Register-blocked micro-kernels are written once with these; inside an FL_MULTIVERSION
// driver the AVX2 clone turns them into ymm FMAs, the baseline clone into pairs of SSE ops.
#pragma once

#include <cstdint>
#if defined(__x86_64__)
#include <xmmintrin.h>
#endif

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
// x in every lane, for values set up outside the hot loops: GCC keeps `0 + x` as a scalar add
// (it turns -0 into +0) before a register broadcast. Inside an inner loop write `v * s[i]` (a
// vector times a scalar) instead: that is one broadcast from memory. (`x - vec_t<T>{}` folds
// to a broadcast in plain code but became vinsertps chains in target_clones functions.)
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
// exp_f32_poly. `lo > x ? lo : x` is one vmaxps that keeps a NaN x (the other order is a
// compare and a blend).
FL_ALWAYS_INLINE vec_t<float> vexp_nonpos(vec_t<float> x) {
  typedef uint32_t uvec __attribute__((vector_size(32)));
  using V = vec_t<float>;
  const V lo = vsplat(-88.0f);
  const V xc = lo > x ? lo : x;
  V t;
  const V p = exp_f32_poly(xc, t);
  return p * __builtin_bit_cast(V, __builtin_bit_cast(uvec, t) << 23);  // 2^n, as in exp_f32_clamped
}

// exp of each lane: exp_f32 (math.h) lane by lane (the upper clamp is one vminps).
FL_ALWAYS_INLINE vec_t<float> vexp(vec_t<float> x) {
  const vec_t<float> hi = vsplat(88.37626266f);
  return vexp_nonpos(hi < x ? hi : x);
}

// Non-temporal store of a vector to a 32-byte aligned p: written to memory without first
// reading the line into the cache (a regular store of a line not in cache reads it first: a
// third of a copy's memory traffic). Two SSE stores, so the baseline clone compiles it too;
// a plain store off x86-64.
FL_ALWAYS_INLINE void vstream(float* p, vec_t<float> v) {
#if defined(__x86_64__)
  const __m128 lo = {v[0], v[1], v[2], v[3]}, hi = {v[4], v[5], v[6], v[7]};
  _mm_stream_ps(p, lo);
  _mm_stream_ps(p + 4, hi);
#else
  vstore(p, v);
#endif
}
// Orders the non-temporal stores before whatever the caller does next (another thread may
// read the output once the parallel region ends).
FL_ALWAYS_INLINE void stream_fence() {
#if defined(__x86_64__)
  _mm_sfence();
#endif
}

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

}  // namespace fl

// Host-side 16-bit float storage types and their conversions to float. CPU kernels load
// fp16/bf16 into float, compute in float, and round back once on store.
#pragma once

#include <cstdint>
#include <cstring>

namespace fl {

using half_t = _Float16;  // GCC/Clang on x86-64: storage type, F16C conversions when enabled

struct bfloat16_t {
  uint16_t bits;
};

template <typename T>
struct acc_type { using type = float; };
template <>
struct acc_type<double> { using type = double; };
template <typename T>
using acc_t = typename acc_type<T>::type;

inline float to_float(float x) { return x; }
inline double to_float(double x) { return x; }
inline float to_float(half_t x) { return static_cast<float>(x); }
inline float to_float(bfloat16_t x) {
  return __builtin_bit_cast(float, static_cast<uint32_t>(x.bits) << 16);
}

template <typename T>
inline T from_acc(acc_t<T> x) { return static_cast<T>(x); }
template <>
inline bfloat16_t from_acc<bfloat16_t>(float f) {
  uint32_t u = __builtin_bit_cast(uint32_t, f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bfloat16_t{static_cast<uint16_t>((u >> 16) | 0x40u)};  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
  return bfloat16_t{static_cast<uint16_t>(u >> 16)};
}

}  // namespace fl

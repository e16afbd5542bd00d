// Shared by CPU and CUDA code: the host/device marker, the error types that pybind11 turns
// into Python exceptions, and FL_CHECK, the one precondition macro. No pybind11 here.
#pragma once

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>

// Forced inline on both sides: on the CPU these small functions are called inside
// `#pragma omp simd` loops of target-cloned drivers, and an out-of-line call there keeps the
// loop scalar (GCC did not always inline exp_f32 on its own).
#if defined(__CUDACC__)
#define FL_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define FL_HOST_DEVICE inline __attribute__((always_inline))
#endif

namespace fl {

// Raised as ValueError in Python (pybind11 maps std::invalid_argument to ValueError).
struct value_error : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};
// Raised as TypeError in Python (translator registered in bindings/module.cpp).
struct type_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// Raised as RuntimeError: the call was valid but cannot run here (e.g. no CUDA build).
struct runtime_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace detail {
inline void stream_all(std::ostringstream&) {}
template <typename T, typename... Rest>
void stream_all(std::ostringstream& os, const T& first, const Rest&... rest) {
  os << first;
  stream_all(os, rest...);
}
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  stream_all(os, args...);
  return os.str();
}
}  // namespace detail

}  // namespace fl

// FL_CHECK(cond, msg...): throw ValueError with the streamed message when cond is false.
// Messages name the argument and say how to fix the call.
#define FL_CHECK(cond, ...)                                          \
  do {                                                               \
    if (!(cond)) throw ::fl::value_error(::fl::detail::concat(__VA_ARGS__)); \
  } while (0)
#define FL_CHECK_TYPE(cond, ...)                                     \
  do {                                                               \
    if (!(cond)) throw ::fl::type_error(::fl::detail::concat(__VA_ARGS__)); \
  } while (0)
#define FL_CHECK_RUNTIME(cond, ...)                                  \
  do {                                                               \
    if (!(cond)) throw ::fl::runtime_error(::fl::detail::concat(__VA_ARGS__)); \
  } while (0)

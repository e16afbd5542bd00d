// The buffer boundary: a View is what Python hands to _C instead of a tensor or an array
// (pointer, dtype, shape, strides in elements, device, stream, and the argument's name).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "fastlearn/common.h"

namespace fl {

// Codes shared with python/fastlearn/_buffer.py (keep in sync).
enum class DType : int { f16 = 0, bf16 = 1, f32 = 2, f64 = 3, i32 = 4, i64 = 5, u8 = 6, b8 = 7, i8 = 8, i16 = 9 };
enum class Device : int { cpu = 0, cuda = 1 };

inline const char* dtype_name(DType d) {
  switch (d) {
    case DType::f16: return "float16";
    case DType::bf16: return "bfloat16";
    case DType::f32: return "float32";
    case DType::f64: return "float64";
    case DType::i32: return "int32";
    case DType::i64: return "int64";
    case DType::u8: return "uint8";
    case DType::b8: return "bool";
    case DType::i8: return "int8";
    case DType::i16: return "int16";
  }
  return "unknown";
}

inline int64_t dtype_size(DType d) {
  switch (d) {
    case DType::f16: case DType::bf16: case DType::i16: return 2;
    case DType::f32: case DType::i32: return 4;
    case DType::f64: case DType::i64: return 8;
    default: return 1;
  }
}

struct View {
  void* data = nullptr;
  DType dtype = DType::f32;
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;  // in elements, not bytes
  Device device = Device::cpu;
  int device_index = 0;
  intptr_t stream = 0;  // cudaStream_t as an integer; 0 on CPU
  std::string name;     // the Python argument's name, for error messages

  int ndim() const { return static_cast<int>(shape.size()); }
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    return n;
  }
  int64_t size(int d) const { return shape.at(static_cast<size_t>(d < 0 ? d + ndim() : d)); }
  bool is_contiguous() const {
    if (numel() == 0) return true;  // nothing to address: any strides will do
    int64_t expected = 1;
    for (int d = ndim() - 1; d >= 0; --d) {
      if (shape[d] != 1 && strides[d] != expected) return false;
      expected *= shape[d];
    }
    return true;
  }
  template <typename T>
  T* ptr() const { return static_cast<T*>(data); }
};

// The one set of view checks; `op` names the function in the message.
inline void check_dtype(const View& v, std::initializer_list<DType> allowed, const char* op) {
  for (DType d : allowed)
    if (v.dtype == d) return;
  std::string list;
  for (DType d : allowed) list += std::string(list.empty() ? "" : ", ") + dtype_name(d);
  FL_CHECK_TYPE(false, op, ": argument '", v.name, "' has dtype ", dtype_name(v.dtype),
                "; expected one of (", list, "). Convert it first, e.g. x.to(torch.float32).");
}
inline void check_contiguous(const View& v, const char* op) {
  FL_CHECK(v.is_contiguous(), op, ": argument '", v.name,
           "' must be contiguous here; call .contiguous() (or np.ascontiguousarray) first.");
}
inline void check_same_shape(const View& a, const View& b, const char* op) {
  FL_CHECK(a.shape == b.shape, op, ": arguments '", a.name, "' and '", b.name,
           "' must have the same shape.");
}
inline void check_same_device(const View& a, const View& b, const char* op) {
  FL_CHECK(a.device == b.device && a.device_index == b.device_index, op, ": arguments '", a.name,
           "' and '", b.name, "' must be on the same device.");
}
inline int normalize_dim(const View& v, int64_t dim, const char* op) {
  const int64_t nd = v.ndim() == 0 ? 1 : v.ndim();
  FL_CHECK(dim >= -nd && dim < nd, op, ": argument 'dim' is ", dim, " but '", v.name, "' has ",
           v.ndim(), " dimension(s); use a dim in [", -nd, ", ", nd - 1, "].");
  return static_cast<int>(dim < 0 ? dim + nd : dim);
}

// A contiguous tensor seen as (outer, length, inner) around one dimension.
struct Split3 {
  int64_t outer = 1, length = 1, inner = 1;
};
inline Split3 split_around(const View& v, int dim) {
  Split3 s;
  if (v.ndim() == 0) return s;
  for (int d = 0; d < dim; ++d) s.outer *= v.shape[d];
  s.length = v.shape[dim];
  for (int d = dim + 1; d < v.ndim(); ++d) s.inner *= v.shape[d];
  return s;
}

}  // namespace fl

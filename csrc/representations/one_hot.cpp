// CPU one_hot: a parallel range check, then each output row is zeroed and gets its one.
#include "one_hot.h"

#include <algorithm>
#include <cstring>

#include "fastlearn/parallel.h"

namespace fl::representations {
namespace {

template <typename L>
void one_hot_impl(const L* labels, int64_t* out, int64_t n, int64_t num_classes) {
  int64_t bad = -1;  // index of a label out of range, if any (the smallest found by any thread)
  parallel_for(n, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t v = static_cast<int64_t>(labels[i]);
      if (v < 0 || v >= num_classes) {
#pragma omp critical(fl_one_hot_bad)
        bad = (bad < 0 || i < bad) ? i : bad;
        return;
      }
    }
  });
  if (bad >= 0) {
    const int64_t v = static_cast<int64_t>(labels[bad]);
    FL_CHECK(v >= 0, "one_hot: argument 'labels' has a negative class value ", v, " at flat index ", bad,
             "; class values must be non-negative.");
    FL_CHECK(false, "one_hot: argument 'labels' has class value ", v, " at flat index ", bad,
             ", not smaller than num_classes=", num_classes,
             "; pass a larger num_classes (or -1 to use max(labels) + 1).");
  }
  parallel_for(n, num_classes, [&](int64_t i0, int64_t i1) {
    std::memset(out + i0 * num_classes, 0, static_cast<size_t>((i1 - i0) * num_classes) * sizeof(int64_t));
    for (int64_t i = i0; i < i1; ++i) out[i * num_classes + static_cast<int64_t>(labels[i])] = 1;
  });
}

}  // namespace

void one_hot(const View& labels, const View& out, int64_t num_classes) {
  check_dtype(labels, {DType::i64, DType::i32, DType::i16, DType::i8, DType::u8}, "one_hot");
  check_dtype(out, {DType::i64}, "one_hot");
  FL_CHECK(labels.device == Device::cpu && out.device == Device::cpu,
           "one_hot: the CPU kernel got tensors on a GPU; use the CUDA path.");
  check_contiguous(labels, "one_hot");
  check_contiguous(out, "one_hot");
  FL_CHECK(num_classes >= 1 || labels.numel() == 0, "one_hot: argument 'num_classes' must be positive, got ",
           num_classes, ".");
  FL_CHECK(out.numel() == labels.numel() * num_classes, "one_hot: argument 'out' must have ",
           labels.numel() * num_classes, " elements (labels.numel() * num_classes), got ", out.numel(), ".");
  const int64_t n = labels.numel();
  if (n == 0) return;
  int64_t* o = out.ptr<int64_t>();
  switch (labels.dtype) {
    case DType::i64: one_hot_impl(labels.ptr<int64_t>(), o, n, num_classes); break;
    case DType::i32: one_hot_impl(labels.ptr<int32_t>(), o, n, num_classes); break;
    case DType::i16: one_hot_impl(labels.ptr<int16_t>(), o, n, num_classes); break;
    case DType::i8: one_hot_impl(labels.ptr<int8_t>(), o, n, num_classes); break;
    default: one_hot_impl(labels.ptr<uint8_t>(), o, n, num_classes); break;
  }
}

}  // namespace fl::representations

// CPU softmax kernels. A contiguous tensor is seen as (outer, length, inner) around `dim`:
// inner == 1 is the row case (reductions along contiguous memory), inner > 1 the column case
// (SIMD lanes run across the contiguous inner axis, one running max/sum per lane).
//
// Row forward: see softmax_row (chunked online max-and-sum, one exp per element for fp32/fp64).
#include "softmax.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include "fastlearn/half.h"
#include "fastlearn/math.h"
#include "fastlearn/parallel.h"
#include "fastlearn/simd.h"
#include "fastlearn/vec.h"

namespace fl::representations {
namespace {

constexpr int64_t kRowChunk = 2048;     // elements per L1-resident chunk of a row (8 KiB fp32)
constexpr int64_t kColumnChunk = 256;   // inner columns handled together in the column case
// Elements of work per thread: each costs ~0.6 ns (exp-bound), so 8192 is ~5 us, a few times
// the wake-up of an idle OpenMP thread.
constexpr int64_t kSoftmaxGrain = 8192;

FL_ALWAYS_INLINE float exp_acc(float x) { return exp_f32(x); }
FL_ALWAYS_INLINE double exp_acc(double x) { return std::exp(x); }
// exp(x - max): the argument is never positive, so the upper clamp can go.
FL_ALWAYS_INLINE float exp_nonpos(float x) { return exp_f32_nonpos(x); }
FL_ALWAYS_INLINE double exp_nonpos(double x) { return std::exp(x); }

// The exp loops run in blocks of kBlock elements, each issuing software prefetches for the
// data kPrefetchBytes ahead: the hardware prefetcher alone leaves the memory idle while the
// exp arithmetic runs (measured on an AMD EPYC: 0.50 -> 0.67-0.74 of a copy's bandwidth on
// one core, rows of 1k and 64k floats). Prefetches never fault, so running past the end of
// the tensor is harmless.
constexpr int64_t kBlock = 64;
constexpr int64_t kPrefetchBytes = 16384;

template <typename T>
FL_ALWAYS_INLINE void prefetch_block_ahead(const T* p) {
  const char* q = reinterpret_cast<const char*>(p) + kPrefetchBytes;
  for (size_t o = 0; o < kBlock * sizeof(T); o += 64) __builtin_prefetch(q + o, 0, 3);
}

template <typename A>
constexpr A neg_inf() { return -std::numeric_limits<A>::infinity(); }

template <typename T>
FL_ALWAYS_INLINE acc_t<T> row_max(const T* x, int64_t n) {
  using A = acc_t<T>;
  A m = neg_inf<A>();
  if constexpr (std::is_same_v<T, float>) {  // four vector maxima: one a cycle, not one per max's latency
    using V = vec_t<float>;
    constexpr int W = vec_width<float>;
    V m0 = vsplat(m), m1 = m0, m2 = m0, m3 = m0;
    int64_t i = 0;
    for (; i + 4 * W <= n; i += 4 * W) {
      const V a = vload(x + i), b = vload(x + i + W), c = vload(x + i + 2 * W), d = vload(x + i + 3 * W);
      m0 = a > m0 ? a : m0, m1 = b > m1 ? b : m1, m2 = c > m2 ? c : m2, m3 = d > m3 ? d : m3;
    }
    m0 = m1 > m0 ? m1 : m0, m2 = m3 > m2 ? m3 : m2, m0 = m2 > m0 ? m2 : m0;
    for (int l = 0; l < W; ++l) m = m0[l] > m ? m0[l] : m;
    for (; i < n; ++i) m = x[i] > m ? x[i] : m;
    return m;
  }
#pragma omp simd reduction(max : m)
  for (int64_t i = 0; i < n; ++i) {
    const A v = to_float(x[i]);
    m = v > m ? v : m;
  }
  return m;
}

// sum of exp(x[i] - m) over [b, e), and y[i] = that exp when kStore (y may be null otherwise).
template <bool kStore, typename T>
FL_ALWAYS_INLINE acc_t<T> sum_exp_range(const T* x, T* y, int64_t b, int64_t e, acc_t<T> m) {
  using A = acc_t<T>;
  A s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = b; i < e; ++i) {
    const A v = exp_nonpos(static_cast<A>(to_float(x[i]) - m));
    if constexpr (kStore) y[i] = v;
    s += v;
  }
  return s;
}

// The same over [0, n) in blocks of kBlock, each prefetching the data kPrefetchBytes ahead.
// float32: whole vectors in explicit SIMD code with two vector sums for the whole range (an
// omp simd reduction per block reduced its lanes every 64 elements, through the stack).
template <bool kStore, typename T>
FL_ALWAYS_INLINE acc_t<T> sum_exp_prefetched(const T* x, T* y, int64_t n, acc_t<T> m) {
  if constexpr (std::is_same_v<T, float>) {
    using V = vec_t<float>;
    constexpr int W = vec_width<float>;
    V s0 = {}, s1 = {};
    const V mv = vsplat(m);
    int64_t b = 0;
    for (; b + kBlock <= n; b += kBlock) {
      prefetch_block_ahead(x + b);
      for (int64_t i = b; i < b + kBlock; i += 2 * W) {
        const V e0 = vexp_nonpos(vload(x + i) - mv), e1 = vexp_nonpos(vload(x + i + W) - mv);
        if constexpr (kStore) vstore(y + i, e0), vstore(y + i + W, e1);
        s0 += e0;
        s1 += e1;
      }
    }
    for (; b + W <= n; b += W) {
      const V e = vexp_nonpos(vload(x + b) - mv);
      if constexpr (kStore) vstore(y + b, e);
      s0 += e;
    }
    return vsum<float>(s0 + s1) + sum_exp_range<kStore>(x, y, b, n, m);
  }
  acc_t<T> s = 0;
  int64_t b = 0;
  for (; b + kBlock <= n; b += kBlock) {
    prefetch_block_ahead(x + b);
    s += sum_exp_range<kStore>(x, y, b, b + kBlock, m);
  }
  return s + sum_exp_range<kStore>(x, y, b, n, m);
}

// Chunk c of a row of n elements: the first is `first` elements long, the others kRowChunk.
struct RowChunks {
  int64_t n, first;
  int64_t count() const { return n <= first ? (n > 0) : 1 + (n - first + kRowChunk - 1) / kRowChunk; }
  int64_t begin(int64_t c) const { return c == 0 ? 0 : first + (c - 1) * kRowChunk; }
  int64_t end(int64_t c) const { return std::min(n, first + c * kRowChunk); }
};

// Row pass 1, one pass over memory: each L1-sized chunk is read once from memory, its max
// taken, and exp(x - chunk max) stored into e (when kStore) or only summed, while it is in
// L1; the chunk sums merge into the row's running (max, sum), returned.
template <bool kStore, typename T>
FL_ALWAYS_INLINE std::pair<acc_t<T>, acc_t<T>> row_max_sum(const T* x, T* e, RowChunks rc,
                                                          std::vector<acc_t<T>>& chunk_max) {
  using A = acc_t<T>;
  const int64_t chunks = rc.count();
  chunk_max.resize(static_cast<size_t>(chunks));
  A m = neg_inf<A>(), s = 0;
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t b = rc.begin(c), len = rc.end(c) - b;
    const A cm = row_max(x + b, len);
    chunk_max[static_cast<size_t>(c)] = cm;
    if (cm == neg_inf<A>()) {  // all -inf (or empty): contributes nothing; e set to 0 (scaled later)
      if constexpr (kStore) std::fill(e + b, e + b + len, T(0));
      continue;
    }
    const A cs = sum_exp_prefetched<kStore>(x + b, e + b, len, cm);
    if (cm > m) {
      s = s * exp_acc(static_cast<A>(m - cm)) + cs;
      m = cm;
    } else {
      s += cs * exp_acc(static_cast<A>(cm - m));  // NaN sums propagate, as in PyTorch
    }
  }
  return {m, s};
}

// Row forward: pass 1 (row_max_sum) stores exp(x - chunk max) into y; a second pass, hitting
// L2 for rows up to ~256 KiB, rescales y by exp(chunk max - row max) / sum, or writes x - lse.
// float16/bfloat16 rows recompute exp in the second pass instead of storing it rounded.
// A row of all -inf has max -inf: every formula below then gives NaN, as PyTorch does.
template <typename T, bool kLog>
FL_ALWAYS_INLINE void softmax_row(const T* x, T* y, int64_t n, std::vector<acc_t<T>>& chunk_max) {
  using A = acc_t<T>;
  constexpr bool kStoreExp = !kLog && std::is_same_v<T, A>;
  const RowChunks rc{n, kRowChunk};
  const auto [m, s] = row_max_sum<kStoreExp>(x, y, rc, chunk_max);
  if constexpr (kStoreExp) {
    const A inv = A(1) / s;
    for (int64_t c = 0; c < rc.count(); ++c) {
      const A f = exp_acc(static_cast<A>(chunk_max[static_cast<size_t>(c)] - m)) * inv;
#pragma omp simd
      for (int64_t i = rc.begin(c); i < rc.end(c); ++i) y[i] = y[i] * f;
    }
  } else if constexpr (kLog) {
    const A shift = m + std::log(s);
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) y[i] = from_acc<T>(static_cast<A>(to_float(x[i]) - shift));
  } else {
    const A inv = A(1) / s;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) y[i] = from_acc<T>(static_cast<A>(exp_nonpos(static_cast<A>(to_float(x[i]) - m)) * inv));
  }
}

// Large float32 outputs (kStreamMinBytes and up) are written with non-temporal stores, so the
// output's lines are never read from memory before being overwritten: 2 bytes of traffic per
// byte of output instead of 3. Whole 64-byte lines only (a line is written either all
// non-temporally or all through the cache); the rest of a row with regular stores.
constexpr int64_t kLineFloats = 64 / sizeof(float);
constexpr int64_t kStreamMinBytes = int64_t{32} << 20;
// softmax streams from a per-thread copy of the row's exps, which must stay in L2 between
// the two passes; longer rows take softmax_row.
constexpr int64_t kStreamMaxRow = int64_t{64} << 10;

// Whether a row-case output (outer x length float32s) is large enough to stream.
FL_ALWAYS_INLINE bool streamed_output(Split3 s) {
  return s.outer * s.length * int64_t{sizeof(float)} >= kStreamMinBytes;
}

// Elements from y to the next 64-byte boundary (y is float-aligned).
FL_ALWAYS_INLINE int64_t to_line(const float* y) {
  return static_cast<int64_t>((-reinterpret_cast<uintptr_t>(y) & 63) / sizeof(float));
}

// y[i] = value(i) over [b, e): whole lines from vector(i) (8 lanes from i) streamed, the
// partial lines at both ends stored from scalar(i).
template <typename Vector, typename Scalar>
FL_ALWAYS_INLINE void stream_range(float* y, int64_t b, int64_t e, Vector vector, Scalar scalar) {
  constexpr int W = vec_width<float>;
  const int64_t head = std::min(e, b + to_line(y + b));
  int64_t i = b;
  for (; i < head; ++i) y[i] = scalar(i);
  for (; i + kLineFloats <= e; i += kLineFloats) {
    vstream(y + i, vector(i));
    vstream(y + i + W, vector(i + W));
  }
  for (; i < e; ++i) y[i] = scalar(i);
}

// The float32 row forward for streamed outputs. softmax: pass 1 stores the exps into
// `scratch` (n floats, L2-resident), with chunks aligned to y's lines so each chunk's scale
// applies to whole lines; pass 2 streams scratch * scale into y. log_softmax: pass 2 streams
// x - lse (x from L2 for rows up to ~256 KiB).
template <bool kLog>
FL_ALWAYS_INLINE void softmax_row_streamed(const float* x, float* y, int64_t n, std::vector<float>& chunk_max,
                                           float* scratch) {
  const RowChunks rc{n, to_line(y) + kRowChunk};
  const auto [m, s] = row_max_sum<!kLog>(x, scratch, rc, chunk_max);
  if constexpr (kLog) {
    const float shift = m + std::log(s);
    const vec_t<float> sv = vsplat(shift);
    stream_range(y, 0, n, [&](int64_t i) { return vload(x + i) - sv; }, [&](int64_t i) { return x[i] - shift; });
  } else {
    const float inv = 1.0f / s;
    for (int64_t c = 0; c < rc.count(); ++c) {
      const float f = exp_acc(chunk_max[static_cast<size_t>(c)] - m) * inv;
      const vec_t<float> fv = vsplat(f);
      stream_range(y, rc.begin(c), rc.end(c), [&](int64_t i) { return vload(scratch + i) * fv; },
                   [&](int64_t i) { return scratch[i] * f; });
    }
  }
}

// Column case: x, y point at one (length, inner) slab; columns [c0, c0 + w) with w <= kColumnChunk.
template <typename T, bool kLog>
FL_ALWAYS_INLINE void softmax_columns(const T* x, T* y, int64_t length, int64_t inner, int64_t c0, int64_t w) {
  using A = acc_t<T>;
  A m[kColumnChunk], s[kColumnChunk];
  for (int64_t c = 0; c < w; ++c) m[c] = neg_inf<A>(), s[c] = 0;
  for (int64_t j = 0; j < length; ++j) {
    const T* xj = x + j * inner + c0;
#pragma omp simd
    for (int64_t c = 0; c < w; ++c) {
      const A v = to_float(xj[c]);
      m[c] = v > m[c] ? v : m[c];
    }
  }
  for (int64_t j = 0; j < length; ++j) {
    const T* xj = x + j * inner + c0;
#pragma omp simd
    for (int64_t c = 0; c < w; ++c) s[c] += exp_acc(static_cast<A>(to_float(xj[c]) - m[c]));
  }
  if constexpr (kLog) {
    for (int64_t c = 0; c < w; ++c) m[c] = m[c] + std::log(s[c]);
  } else {
    for (int64_t c = 0; c < w; ++c) s[c] = A(1) / s[c];
  }
  for (int64_t j = 0; j < length; ++j) {
    const T* xj = x + j * inner + c0;
    T* yj = y + j * inner + c0;
#pragma omp simd
    for (int64_t c = 0; c < w; ++c) {
      const A v = to_float(xj[c]);
      if constexpr (kLog)
        yj[c] = from_acc<T>(static_cast<A>(v - m[c]));
      else
        yj[c] = from_acc<T>(static_cast<A>(exp_acc(static_cast<A>(v - m[c])) * s[c]));
    }
  }
}

template <typename T, bool kLog>
FL_ALWAYS_INLINE acc_t<T> backward_row_sum(const T* g, const T* y, int64_t n) {
  using A = acc_t<T>;
  A r = 0;  // softmax: <g, y>; log_softmax: sum g
#pragma omp simd reduction(+ : r)
  for (int64_t i = 0; i < n; ++i) {
    if constexpr (kLog)
      r += to_float(g[i]);
    else
      r += static_cast<A>(to_float(g[i])) * static_cast<A>(to_float(y[i]));
  }
  return r;
}

template <typename T, bool kLog>
FL_ALWAYS_INLINE void softmax_backward_row(const T* g, const T* y, T* gx, int64_t n) {
  using A = acc_t<T>;
  const A r = backward_row_sum<T, kLog>(g, y, n);
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const A gi = to_float(g[i]), yi = to_float(y[i]);
    if constexpr (kLog)
      gx[i] = from_acc<T>(static_cast<A>(gi - exp_acc(yi) * r));
    else
      gx[i] = from_acc<T>(static_cast<A>(yi * (gi - r)));
  }
}

// The float32 backward row for streamed outputs: the same two passes, grad_x streamed.
template <bool kLog>
FL_ALWAYS_INLINE void softmax_backward_row_streamed(const float* g, const float* y, float* gx, int64_t n) {
  const float r = backward_row_sum<float, kLog>(g, y, n);
  const vec_t<float> rv = vsplat(r);
  if constexpr (kLog)
    stream_range(gx, 0, n, [&](int64_t i) { return vload(g + i) - vexp(vload(y + i)) * rv; },
                 [&](int64_t i) { return g[i] - exp_acc(y[i]) * r; });
  else
    stream_range(gx, 0, n, [&](int64_t i) { return vload(y + i) * (vload(g + i) - rv); },
                 [&](int64_t i) { return y[i] * (g[i] - r); });
}

template <typename T, bool kLog>
FL_ALWAYS_INLINE void softmax_backward_columns(const T* g, const T* y, T* gx, int64_t length, int64_t inner,
                                               int64_t c0, int64_t w) {
  using A = acc_t<T>;
  A r[kColumnChunk];
  for (int64_t c = 0; c < w; ++c) r[c] = 0;
  for (int64_t j = 0; j < length; ++j) {
    const int64_t o = j * inner + c0;
#pragma omp simd
    for (int64_t c = 0; c < w; ++c) {
      if constexpr (kLog)
        r[c] += to_float(g[o + c]);
      else
        r[c] += static_cast<A>(to_float(g[o + c])) * static_cast<A>(to_float(y[o + c]));
    }
  }
  for (int64_t j = 0; j < length; ++j) {
    const int64_t o = j * inner + c0;
#pragma omp simd
    for (int64_t c = 0; c < w; ++c) {
      const A gi = to_float(g[o + c]), yi = to_float(y[o + c]);
      if constexpr (kLog)
        gx[o + c] = from_acc<T>(static_cast<A>(gi - exp_acc(yi) * r[c]));
      else
        gx[o + c] = from_acc<T>(static_cast<A>(yi * (gi - r[c])));
    }
  }
}

// Work items: rows [r0, r1) in the row case; (slab, column chunk) pairs in the column case.
template <typename T, bool kLog>
FL_ALWAYS_INLINE void forward_items(const T* x, T* y, Split3 s, int64_t i0, int64_t i1) {
  if (s.inner == 1) {
    std::vector<acc_t<T>> chunk_max;
    if constexpr (std::is_same_v<T, float>) {
      if (streamed_output(s) && (kLog || s.length <= kStreamMaxRow)) {
        std::vector<float> scratch(kLog ? 0 : static_cast<size_t>(s.length));
        for (int64_t r = i0; r < i1; ++r)
          softmax_row_streamed<kLog>(x + r * s.length, y + r * s.length, s.length, chunk_max, scratch.data());
        stream_fence();
        return;
      }
    }
    for (int64_t r = i0; r < i1; ++r) softmax_row<T, kLog>(x + r * s.length, y + r * s.length, s.length, chunk_max);
    return;
  }
  const int64_t chunks = (s.inner + kColumnChunk - 1) / kColumnChunk;
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t o = i / chunks, c0 = (i % chunks) * kColumnChunk;
    const int64_t off = o * s.length * s.inner;
    softmax_columns<T, kLog>(x + off, y + off, s.length, s.inner, c0, std::min(kColumnChunk, s.inner - c0));
  }
}

template <typename T, bool kLog>
FL_ALWAYS_INLINE void backward_items(const T* g, const T* y, T* gx, Split3 s, int64_t i0, int64_t i1) {
  if (s.inner == 1) {
    if constexpr (std::is_same_v<T, float>) {
      if (streamed_output(s)) {
        for (int64_t r = i0; r < i1; ++r)
          softmax_backward_row_streamed<kLog>(g + r * s.length, y + r * s.length, gx + r * s.length, s.length);
        stream_fence();
        return;
      }
    }
    for (int64_t r = i0; r < i1; ++r)
      softmax_backward_row<T, kLog>(g + r * s.length, y + r * s.length, gx + r * s.length, s.length);
    return;
  }
  const int64_t chunks = (s.inner + kColumnChunk - 1) / kColumnChunk;
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t o = i / chunks, c0 = (i % chunks) * kColumnChunk;
    const int64_t off = o * s.length * s.inner;
    softmax_backward_columns<T, kLog>(g + off, y + off, gx + off, s.length, s.inner, c0,
                                      std::min(kColumnChunk, s.inner - c0));
  }
}

// Multiversioned drivers, one per storage type (float64 stays scalar: std::exp).
#define FL_SOFTMAX_DRIVERS(T, SUFFIX, ATTR)                                                           \
  ATTR void forward_##SUFFIX(const T* x, T* y, Split3 s, bool log, int64_t i0, int64_t i1) {          \
    if (log)                                                                                          \
      forward_items<T, true>(x, y, s, i0, i1);                                                        \
    else                                                                                              \
      forward_items<T, false>(x, y, s, i0, i1);                                                       \
  }                                                                                                   \
  ATTR void backward_##SUFFIX(const T* g, const T* y, T* gx, Split3 s, bool log, int64_t i0, int64_t i1) { \
    if (log)                                                                                          \
      backward_items<T, true>(g, y, gx, s, i0, i1);                                                   \
    else                                                                                              \
      backward_items<T, false>(g, y, gx, s, i0, i1);                                                  \
  }

FL_SOFTMAX_DRIVERS(float, f32, FL_MULTIVERSION)
FL_SOFTMAX_DRIVERS(half_t, f16, FL_MULTIVERSION)
FL_SOFTMAX_DRIVERS(bfloat16_t, bf16, FL_MULTIVERSION)
FL_SOFTMAX_DRIVERS(double, f64, )
#undef FL_SOFTMAX_DRIVERS

int64_t work_items(Split3 s) {
  return s.inner == 1 ? s.outer : s.outer * ((s.inner + kColumnChunk - 1) / kColumnChunk);
}
int64_t cost_per_item(Split3 s) { return s.length * std::min(s.inner, kColumnChunk); }

void check_softmax_inputs(const View& a, const View& b, const char* op) {
  check_dtype(a, {DType::f32, DType::f64, DType::f16, DType::bf16}, op);
  FL_CHECK_TYPE(a.dtype == b.dtype, op, ": arguments '", a.name, "' and '", b.name, "' must have the same dtype.");
  check_same_shape(a, b, op);
  check_same_device(a, b, op);
  FL_CHECK(a.device == Device::cpu, op, ": the CPU kernel got a ", a.name, " on a GPU; use the CUDA path.");
  check_contiguous(a, op);
  check_contiguous(b, op);
}

}  // namespace

void softmax_forward(const View& x, const View& y, int64_t dim, bool log) {
  const char* op = log ? "log_softmax" : "softmax";
  check_softmax_inputs(x, y, op);
  const Split3 s = split_around(x, normalize_dim(x, dim, op));
  if (x.numel() == 0) return;
  parallel_for(work_items(s), cost_per_item(s), [&](int64_t i0, int64_t i1) {
    switch (x.dtype) {
      case DType::f32: forward_f32(x.ptr<float>(), y.ptr<float>(), s, log, i0, i1); break;
      case DType::f64: forward_f64(x.ptr<double>(), y.ptr<double>(), s, log, i0, i1); break;
      case DType::f16: forward_f16(x.ptr<half_t>(), y.ptr<half_t>(), s, log, i0, i1); break;
      default: forward_bf16(x.ptr<bfloat16_t>(), y.ptr<bfloat16_t>(), s, log, i0, i1); break;
    }
  }, kSoftmaxGrain);
}

void softmax_backward(const View& grad_y, const View& y, const View& grad_x, int64_t dim, bool log) {
  const char* op = log ? "log_softmax_backward" : "softmax_backward";
  check_softmax_inputs(grad_y, y, op);
  check_softmax_inputs(grad_y, grad_x, op);
  const Split3 s = split_around(y, normalize_dim(y, dim, op));
  if (y.numel() == 0) return;
  parallel_for(work_items(s), cost_per_item(s), [&](int64_t i0, int64_t i1) {
    switch (y.dtype) {
      case DType::f32: backward_f32(grad_y.ptr<float>(), y.ptr<float>(), grad_x.ptr<float>(), s, log, i0, i1); break;
      case DType::f64: backward_f64(grad_y.ptr<double>(), y.ptr<double>(), grad_x.ptr<double>(), s, log, i0, i1); break;
      case DType::f16: backward_f16(grad_y.ptr<half_t>(), y.ptr<half_t>(), grad_x.ptr<half_t>(), s, log, i0, i1); break;
      default: backward_bf16(grad_y.ptr<bfloat16_t>(), y.ptr<bfloat16_t>(), grad_x.ptr<bfloat16_t>(), s, log, i0, i1); break;
    }
  }, kSoftmaxGrain);
}

}  // namespace fl::representations

// Kernel columns (SIMD across rows, OpenMP across row blocks) and their LRU cache.
// A column costs n*d multiply-adds streamed over the transposed rows: the work LIBSVM does
// one scalar dot product at a time, and where an SMO fit spends most of its time.
#include "kernel.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include <omp.h>

#include "fastlearn/common.h"
#include "fastlearn/math.h"
#include "fastlearn/parallel.h"
#include "fastlearn/simd.h"

namespace fl::svm {
namespace {

constexpr int64_t kParallelColumnWork = 1 << 18;  // multiply-adds per column that may be worth threads
constexpr int64_t kLanes = 32;  // rows per panel; their dot products stay in registers (4 AVX2 vectors)

// a[l] <- kernel(dot = a[l]) for one panel's kLanes rows (s: their squared norms).
FL_ALWAYS_INLINE void transform_lanes(float* a, const float* s, float sq_j, int kind, float gamma, float coef0,
                                      int degree) {
  switch (static_cast<KernelKind>(kind)) {
    case KernelKind::rbf:
#pragma omp simd
      for (int64_t l = 0; l < kLanes; ++l) {
        float d2 = s[l] + sq_j - 2.0f * a[l];
        d2 = d2 > 0.0f ? d2 : 0.0f;  // rounding can make a tiny distance negative
        a[l] = exp_f32(-gamma * d2);
      }
      break;
    case KernelKind::poly:
#pragma omp simd
      for (int64_t l = 0; l < kLanes; ++l) {
        const float base = gamma * a[l] + coef0;
        float r = 1.0f;
        for (int e = 0; e < degree; ++e) r *= base;
        a[l] = r;
      }
      break;
    case KernelKind::sigmoid:
#pragma omp simd
      for (int64_t l = 0; l < kLanes; ++l) {
        const float z = gamma * a[l] + coef0;
        const float az = z < 0.0f ? -z : z;
        const float th = 1.0f - 2.0f / (exp_f32(2.0f * az) + 1.0f);  // tanh(|z|)
        a[l] = z < 0.0f ? -th : th;
      }
      break;
    default:  // linear
      break;
  }
}

// out[t] = kernel(dot(x_t, x_j)) for the rows of panels [p0, p1). A panel stores kLanes rows
// feature-major (d x kLanes, contiguous), so the loop over features streams memory
// sequentially and each feature costs one load and one FMA per vector of rows.
FL_MULTIVERSION void column_panels(const float* panels, int64_t n, int64_t d, const float* xj, const float* sq,
                                   float sq_j, int kind, float gamma, float coef0, int degree, int64_t p0,
                                   int64_t p1, float* out) {
  for (int64_t p = p0; p < p1; ++p) {
    const float* panel = panels + p * d * kLanes;
    float a[kLanes];
#pragma omp simd
    for (int64_t l = 0; l < kLanes; ++l) a[l] = 0.0f;
    for (int64_t k = 0; k < d; ++k) {
      const float w = xj[k];
      const float* xk = panel + k * kLanes;
#pragma omp simd
      for (int64_t l = 0; l < kLanes; ++l) a[l] += xk[l] * w;
    }
    transform_lanes(a, sq + p * kLanes, sq_j, kind, gamma, coef0, degree);
    const int64_t len = std::min(kLanes, n - p * kLanes);
    float* o = out + p * kLanes;
#pragma omp simd
    for (int64_t l = 0; l < len; ++l) o[l] = a[l];
  }
}


double kernel_scalar(const KernelSpec& s, double dot, double sq_a, double sq_b) {
  switch (s.kind) {
    case KernelKind::linear: return dot;
    case KernelKind::rbf: return std::exp(-s.gamma * std::max(0.0, sq_a + sq_b - 2.0 * dot));
    case KernelKind::poly: return std::pow(s.gamma * dot + s.coef0, s.degree);
    case KernelKind::sigmoid: return std::tanh(s.gamma * dot + s.coef0);
    default: return 0.0;
  }
}

}  // namespace

KernelMatrix::KernelMatrix(const float* x, int64_t n, int64_t d, KernelSpec spec) : n_(n), d_(d), spec_(spec) {
  FL_CHECK(n > 0 && d > 0, "svm: the training data must have at least one sample and one feature.");
  diag_.resize(static_cast<size_t>(n));
  if (spec.kind == KernelKind::precomputed) {
    FL_CHECK(n == d, "svm: a precomputed kernel must be a square matrix, got ", n, " x ", d, ".");
    gram_ = x;
    for (int64_t i = 0; i < n; ++i) diag_[static_cast<size_t>(i)] = x[i * n + i];
    return;
  }
  // Centre the rows for rbf: distances do not change, and the |a|^2 + |b|^2 - 2ab form then
  // cancels far less in float32.
  std::vector<double> mean(static_cast<size_t>(d), 0.0);
  if (spec.kind == KernelKind::rbf) {
    for (int64_t i = 0; i < n; ++i)
      for (int64_t k = 0; k < d; ++k) mean[static_cast<size_t>(k)] += x[i * d + k];
    for (auto& m : mean) m /= static_cast<double>(n);
  }
  const int64_t n_panels = (n + kLanes - 1) / kLanes;
  panels_.assign(static_cast<size_t>(n_panels * kLanes * d), 0.0f);  // padding rows stay 0
  sq_norms_.assign(static_cast<size_t>(n_panels * kLanes), 0.0f);
  for (int64_t i = 0; i < n; ++i) {  // one pass over the data: not worth threads
    double sq = 0.0;
    for (int64_t k = 0; k < d; ++k) {
      const float v = static_cast<float>(x[i * d + k] - mean[static_cast<size_t>(k)]);
      panels_[static_cast<size_t>(panel_index(i, k))] = v;
      sq += static_cast<double>(v) * v;
    }
    sq_norms_[static_cast<size_t>(i)] = static_cast<float>(sq);
    diag_[static_cast<size_t>(i)] = kernel_scalar(spec_, sq, sq, sq);
  }
}

KernelMatrix::KernelMatrix(const KernelMatrix& base, const std::vector<int32_t>& rows)
    : n_(static_cast<int64_t>(rows.size())), d_(base.d_), spec_(base.spec_) {
  FL_CHECK(base.can_subset() && n_ > 0, "svm: internal error: cannot take a row subset of this kernel.");
  const int64_t n_panels = (n_ + kLanes - 1) / kLanes;
  panels_.assign(static_cast<size_t>(n_panels * kLanes * d_), 0.0f);
  sq_norms_.assign(static_cast<size_t>(n_panels * kLanes), 0.0f);
  diag_.resize(static_cast<size_t>(n_));
  for (int64_t i = 0; i < n_; ++i) {
    const int64_t r = rows[static_cast<size_t>(i)];
    for (int64_t k = 0; k < d_; ++k)
      panels_[static_cast<size_t>(panel_index(i, k))] = base.panels_[static_cast<size_t>(base.panel_index(r, k))];
    sq_norms_[static_cast<size_t>(i)] = base.sq_norms_[static_cast<size_t>(r)];
    diag_[static_cast<size_t>(i)] = base.diag_[static_cast<size_t>(r)];
  }
}

void KernelMatrix::column(int64_t j, float* out, bool threads) const {
  if (spec_.kind == KernelKind::precomputed) {
    // LIBSVM's convention: the value for (t, j) is row j, entry t.
    const float* row = gram_ + j * n_;
    std::copy(row, row + n_, out);
    return;
  }
  float xj[4096];
  std::vector<float> xj_heap;
  float* xjp = xj;
  if (d_ > 4096) {
    xj_heap.resize(static_cast<size_t>(d_));
    xjp = xj_heap.data();
  }
  for (int64_t k = 0; k < d_; ++k) xjp[k] = panels_[static_cast<size_t>(panel_index(j, k))];
  const float sq_j = sq_norms_[static_cast<size_t>(j)];
  const int64_t n_panels = (n_ + kLanes - 1) / kLanes;
  auto body = [&](int64_t p0, int64_t p1) {
    column_panels(panels_.data(), n_, d_, xjp, sq_norms_.data(), sq_j, static_cast<int>(spec_.kind),
                  static_cast<float>(spec_.gamma), static_cast<float>(spec_.coef0), spec_.degree, p0, p1, out);
  };
  if (threads && worth_threads())
    parallel_for(n_panels, d_ * kLanes, body);
  else
    body(0, n_panels);
  if (spec_.kind == KernelKind::rbf) out[j] = 1.0f;  // exactly, as the diagonal
}

ColumnCache::ColumnCache(const KernelMatrix& kernel, int64_t capacity_columns)
    : kernel_(kernel), n_(kernel.rows()), capacity_(std::max<int64_t>(2, std::min(capacity_columns, kernel.rows()))) {
  mode_ = kernel.worth_threads() ? Mode::probing : Mode::serial;
  slot_of_.assign(static_cast<size_t>(n_), -1);
  column_of_.assign(static_cast<size_t>(capacity_), -1);
  prev_.assign(static_cast<size_t>(capacity_), -1);
  next_.assign(static_cast<size_t>(capacity_), -1);
  data_.resize(static_cast<size_t>(capacity_));
}

void ColumnCache::touch(int32_t s) {
  if (head_ == s) return;
  // unlink
  if (prev_[s] >= 0) next_[prev_[s]] = next_[s];
  if (next_[s] >= 0) prev_[next_[s]] = prev_[s];
  if (tail_ == s) tail_ = prev_[s];
  // push front
  prev_[s] = -1;
  next_[s] = head_;
  if (head_ >= 0) prev_[head_] = s;
  head_ = s;
  if (tail_ < 0) tail_ = s;
}

bool KernelMatrix::worth_threads() const { return n_ * d_ >= kParallelColumnWork && omp_get_max_threads() > 1; }

// The first misses alternate between one thread and all threads per column, timed; the rest
// use the faster. A parallel region per column pays off on idle cores and loses badly when
// other processes hold them (each region then waits for a descheduled thread).
void ColumnCache::compute(int64_t j, float* out) {
  if (mode_ != Mode::probing) {
    kernel_.column(j, out, mode_ == Mode::threads);
    return;
  }
  const bool threads = (probes_ & 1) != 0;
  const auto t0 = std::chrono::steady_clock::now();
  kernel_.column(j, out, threads);
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  probe_seconds_[threads] += dt;
  if (++probes_ == 2 * kProbes) mode_ = probe_seconds_[1] < probe_seconds_[0] ? Mode::threads : Mode::serial;
}

const float* ColumnCache::get(int64_t j) {
  int32_t s = slot_of_[static_cast<size_t>(j)];
  if (s >= 0) {
    touch(s);
    return data_[s].get();
  }
  ++misses_;
  // A free slot while there is one, else the least recently used.
  if (filled_ < capacity_) {  // slots fill in order, so the first free one is filled_
    s = static_cast<int32_t>(filled_++);
    data_[s].reset(new float[static_cast<size_t>(n_)]);
  } else {
    s = tail_;
    slot_of_[static_cast<size_t>(column_of_[s])] = -1;
  }
  column_of_[s] = j;
  slot_of_[static_cast<size_t>(j)] = s;
  compute(j, data_[s].get());
  touch(s);
  return data_[s].get();
}

}  // namespace fl::svm

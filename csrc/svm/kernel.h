// Kernel columns of the SVM solvers: K(x_t, x_j) for every training row t and one column j,
// computed in float32 with SIMD across rows and OpenMP across row blocks, and an LRU cache
// of such full-length columns shared by every sub-problem of one fit (all one-vs-one pairs).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

namespace fl::svm {

enum class KernelKind : int { linear = 0, poly = 1, rbf = 2, sigmoid = 3, precomputed = 4 };

struct KernelSpec {
  KernelKind kind = KernelKind::rbf;
  double gamma = 1.0;
  double coef0 = 0.0;
  int degree = 3;
};

// The training rows, stored transposed (features x rows) so one column is a sum of
// `features` scaled row vectors: a streaming loop that vectorises across rows.
// For the precomputed kernel the "rows" are the rows of the given Gram matrix.
class KernelMatrix {
 public:
  // x: n x d, row-major float32 (precomputed: the n x n Gram matrix K(X, X)).
  KernelMatrix(const float* x, int64_t n, int64_t d, KernelSpec spec);
  // The rows `rows` of `base`, in that order (not for precomputed kernels): the solver's
  // compacted active set, so that columns cost the active rows only.
  KernelMatrix(const KernelMatrix& base, const std::vector<int32_t>& rows);
  bool can_subset() const { return spec_.kind != KernelKind::precomputed; }
  int64_t rows() const { return n_; }
  // out[t] = K(x_t, x_j) for t in [0, n); threads: split the rows over OpenMP threads.
  void column(int64_t j, float* out, bool threads) const;
  // Whether a column is big enough that threads might pay (and more than one is allowed).
  bool worth_threads() const;
  // K(x_j, x_j), as the solver's quadratic coefficients need it.
  double diagonal(int64_t j) const { return diag_[static_cast<size_t>(j)]; }

 private:
  int64_t n_, d_;
  KernelSpec spec_;
  const float* gram_ = nullptr;   // precomputed: the caller's n x n matrix (kept alive by the caller)
  // Rows in panels of 32: panel p holds rows [32p, 32p + 32) feature-major (d x 32), centred
  // for rbf (distances are translation-invariant, and smaller norms cancel less in float32).
  int64_t panel_index(int64_t row, int64_t feature) const { return (row / 32) * d_ * 32 + feature * 32 + row % 32; }
  std::vector<float> panels_;
  std::vector<float> sq_norms_;   // |x_t|^2 of the centred rows, padded to whole panels
  std::vector<double> diag_;      // n
};

// LRU cache of full-length kernel columns keyed by training row; capacity in columns.
// A pointer returned by get() stays valid until `capacity - 1` other columns were fetched
// (the solver holds at most two at a time; capacity is at least two).
class ColumnCache {
 public:
  ColumnCache(const KernelMatrix& kernel, int64_t capacity_columns);
  const float* get(int64_t j);
  int64_t capacity() const { return capacity_; }
  int64_t misses() const { return misses_; }

 private:
  void touch(int32_t slot);
  void compute(int64_t j, float* out);
  enum class Mode { probing, serial, threads };
  static constexpr int kProbes = 8;  // timed misses per mode before choosing
  Mode mode_ = Mode::serial;
  int probes_ = 0;
  double probe_seconds_[2] = {0.0, 0.0};
  const KernelMatrix& kernel_;
  int64_t n_, capacity_;
  std::vector<int32_t> slot_of_;     // per column: its slot, or -1
  std::vector<int64_t> column_of_;   // per slot: its column, or -1
  std::vector<int32_t> prev_, next_; // LRU list over slots; head_ is the most recent
  int32_t head_ = -1, tail_ = -1;
  std::vector<std::unique_ptr<float[]>> data_;
  int64_t filled_ = 0;  // slots in use (they fill in order)
  int64_t misses_ = 0;
};

}  // namespace fl::svm

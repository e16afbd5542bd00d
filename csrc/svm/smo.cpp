// SMO with second-order working-set selection (WSS2, Fan, Chen & Lin 2005), shrinking and
// gradient reconstruction, following LIBSVM's Solver step for step (same tie-breaking), so
// the solutions match scikit-learn's. Differences that matter for speed: kernel columns come
// from a cache keyed by training row and shared by all sub-problems of a fit; the gradient
// update of one iteration is fused with the choice of the next iteration's first index, so
// an iteration makes two passes over the active set instead of three (both vectorised); and
// once shrinking leaves at most half the rows of a large problem active, those rows move to a
// compact kernel with its own cache, so columns cost the active rows only.
#include "smo.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>

#include "fastlearn/common.h"
#include "fastlearn/simd.h"

namespace fl::svm {
namespace {

constexpr int64_t kCompactMinVariables = 8192;  // smaller problems keep every column in the cache
constexpr double kTau = 1e-12;  // LIBSVM's TAU: quadratic coefficient floor
constexpr double kInf = std::numeric_limits<double>::infinity();
enum : int8_t { kLower = 0, kUpper = 1, kFree = 2 };

// The per-iteration passes, vectorised (FL_MULTIVERSION: AVX-512/AVX2 clones). LIBSVM keeps
// the last of equal maxima; a vector max reduction followed by a backward scan for the first
// element equal to the maximum gives the same index. v[t] = -y_t G_t.

// v_up[t] = t in I_up ? v_t : -inf; returns max_t v_up[t].
FL_MULTIVERSION double masked_v_max(const double* G, const double* y, const uint8_t* up_ok, int64_t n,
                                    double* v_up) {
  double gmax = -kInf;
#pragma omp simd reduction(max : gmax)
  for (int64_t t = 0; t < n; ++t) {
    const double v = up_ok[t] ? -y[t] * G[t] : -kInf;
    v_up[t] = v;
    gmax = v > gmax ? v : gmax;
  }
  return gmax;
}

// G_t += y_t (ci K_i[row_t] + cj K_j[row_t]), fused with masked_v_max of the new G.
FL_MULTIVERSION double update_gradient(double* G, const double* y, const int32_t* row, const uint8_t* up_ok,
                                       const float* Ki, const float* Kj, double ci, double cj, int64_t n,
                                       double* v_up) {
  double gmax = -kInf;
#pragma omp simd reduction(max : gmax)
  for (int64_t t = 0; t < n; ++t) {
    const double g = G[t] + y[t] * (ci * static_cast<double>(Ki[row[t]]) + cj * static_cast<double>(Kj[row[t]]));
    G[t] = g;
    const double v = up_ok[t] ? -y[t] * g : -kInf;
    v_up[t] = v;
    gmax = v > gmax ? v : gmax;
  }
  return gmax;
}

// Second-order scores of the candidates j in I_low with a positive gap gmax - v_j:
// score[t] = gap^2 / max(K_ii + K_jj - 2 K_ij, tau), else -inf. Returns the best score and
// sets *gmax2 = max over I_low of -v_t.
FL_MULTIVERSION double wss2_scores(const double* G, const double* y, const int32_t* row, const uint8_t* low_ok,
                                   const double* qd, const float* Ki, double qdi, double gmax, int64_t n,
                                   double* score, double* gmax2_out) {
  double best = -kInf, gmax2 = -kInf;
#pragma omp simd reduction(max : best, gmax2)
  for (int64_t t = 0; t < n; ++t) {
    const double v = -y[t] * G[t];
    const double w = low_ok[t] ? -v : -kInf;
    gmax2 = w > gmax2 ? w : gmax2;
    const double gd = gmax - v;
    double quad = qdi + qd[t] - 2.0 * static_cast<double>(Ki[row[t]]);
    quad = quad > 0 ? quad : kTau;
    const double sc = (low_ok[t] && gd > 0) ? gd * gd / quad : -kInf;
    score[t] = sc;
    best = sc > best ? sc : best;
  }
  *gmax2_out = gmax2;
  return best;
}

// The last t with buf[t] == value (-1 when value is -inf: no candidate).
int64_t last_index_of(const double* buf, int64_t n, double value) {
  if (value == -kInf) return -1;
  for (int64_t t = n - 1; t >= 0; --t)
    if (buf[t] == value) return t;
  return -1;
}

class Solver {
 public:
  Solver(const SubProblem& pb, ColumnCache& cache, const KernelMatrix& kernel, const SolverOptions& opt)
      : cache_(cache), kernel_(kernel), opt_(opt), m_(static_cast<int64_t>(pb.row.size())) {
    row_ = pb.row;
    y_.assign(pb.y.begin(), pb.y.end());
    buf_.resize(static_cast<size_t>(m_));
    p_ = pb.p;
    C_ = pb.C;
    alpha_.assign(static_cast<size_t>(m_), 0.0);
    G_ = p_;                                   // alpha = 0: G = Qa + p = p
    G_bar_.assign(static_cast<size_t>(m_), 0.0);
    qd_.resize(static_cast<size_t>(m_));
    status_.resize(static_cast<size_t>(m_));
    up_ok_.resize(static_cast<size_t>(m_));
    low_ok_.resize(static_cast<size_t>(m_));
    active_set_.resize(static_cast<size_t>(m_));
    for (int64_t t = 0; t < m_; ++t) {
      qd_[t] = kernel.diagonal(row_[t]);
      active_set_[t] = static_cast<int32_t>(t);
      set_status(t);
    }
    active_ = m_;
  }

  Solution run() {
    Solution sol;
    const int64_t max_iter =
        opt_.max_iter >= 0 ? opt_.max_iter : std::max<int64_t>(10000000, m_ > (INT32_MAX / 100) ? INT32_MAX : 100 * m_);
    int64_t counter = std::min<int64_t>(m_, 1000) + 1;
    int64_t iter = 0;
    bool i_valid = false;
    while (true) {
      if (iter >= max_iter) {
        sol.converged = false;
        unshrink_all();
        break;
      }
      if (--counter == 0) {
        counter = std::min<int64_t>(m_, 1000);
        if (opt_.shrinking) {
          shrink();
          i_valid = false;
        }
      }
      if (!i_valid) select_i();
      int64_t j = select_j();
      if (j < 0) {
        unshrink_all();
        select_i();
        j = select_j();
        if (j < 0) break;
        counter = 1;  // shrink at the next iteration
      }
      ++iter;
      step(i_, j);
      i_valid = true;
      if (opt_.poll && (iter & 4095) == 0) opt_.poll(iter);
    }
    sol.rho = compute_rho();
    double v = 0.0;
    for (int64_t t = 0; t < m_; ++t) v += alpha_[t] * (G_[t] + p_[t]);
    sol.objective = v / 2;
    sol.alpha.assign(static_cast<size_t>(m_), 0.0);
    for (int64_t t = 0; t < m_; ++t) sol.alpha[active_set_[t]] = alpha_[t];
    sol.iterations = iter;
    return sol;
  }

 private:
  bool is_upper(int64_t t) const { return status_[t] == kUpper; }
  bool is_lower(int64_t t) const { return status_[t] == kLower; }
  bool is_free(int64_t t) const { return status_[t] == kFree; }

  void set_status(int64_t t) {
    status_[t] = alpha_[t] >= C_[t] ? kUpper : (alpha_[t] <= 0 ? kLower : kFree);
    const bool pos = y_[t] > 0;
    up_ok_[t] = pos ? status_[t] != kUpper : status_[t] != kLower;   // t in I_up
    low_ok_[t] = pos ? status_[t] != kLower : status_[t] != kUpper;  // t in I_low
  }

  void swap_positions(int64_t a, int64_t b) {
    std::swap(row_[a], row_[b]);
    std::swap(y_[a], y_[b]);
    std::swap(p_[a], p_[b]);
    std::swap(C_[a], C_[b]);
    std::swap(alpha_[a], alpha_[b]);
    std::swap(G_[a], G_[b]);
    std::swap(G_bar_[a], G_bar_[b]);
    std::swap(qd_[a], qd_[b]);
    std::swap(status_[a], status_[b]);
    std::swap(up_ok_[a], up_ok_[b]);
    std::swap(low_ok_[a], low_ok_[b]);
    std::swap(active_set_[a], active_set_[b]);
    if (compact_) std::swap(kidx_[a], kidx_[b]);
  }

  // i = argmax over I_up of -y_t G_t (the last of equal maxima, as LIBSVM).
  void select_i() {
    gmax_ = masked_v_max(G_.data(), y_.data(), up_ok_.data(), active_, buf_.data());
    i_ = last_index_of(buf_.data(), active_, gmax_);
  }

  // j by the second-order rule given i; -1 when the pair's gap is below tol (optimal).
  int64_t select_j() {
    if (i_ < 0) return -1;  // I_up empty: nothing violates
    const float* Ki = active_column(i_);
    double gmax2 = -kInf;
    const double best = wss2_scores(G_.data(), y_.data(), active_index(), low_ok_.data(), qd_.data(), Ki, qd_[i_],
                                    gmax_, active_, buf_.data(), &gmax2);
    const int64_t j = last_index_of(buf_.data(), active_, best);
    if (gmax_ + gmax2 < opt_.tol || j < 0) return -1;
    return j;
  }

  // The two-variable update of LIBSVM, then the gradient update over the active set fused
  // with the next choice of i, then G_bar where a variable entered or left its upper bound.
  void step(int64_t i, int64_t j) {
    const float* Ki = active_column(i);
    const float* Kj = active_column(j);
    const double Ci = C_[i], Cj = C_[j];
    const double old_ai = alpha_[i], old_aj = alpha_[j];
    const double yi = y_[i], yj = y_[j];
    const double Qij = yi * yj * static_cast<double>(Ki[active_index()[j]]);
    double& ai = alpha_[i];
    double& aj = alpha_[j];
    if (yi != yj) {
      double quad = qd_[i] + qd_[j] + 2 * Qij;
      if (quad <= 0) quad = kTau;
      const double delta = (-G_[i] - G_[j]) / quad;
      const double diff = ai - aj;
      ai += delta;
      aj += delta;
      if (diff > 0) {
        if (aj < 0) {
          aj = 0;
          ai = diff;
        }
      } else {
        if (ai < 0) {
          ai = 0;
          aj = -diff;
        }
      }
      if (diff > Ci - Cj) {
        if (ai > Ci) {
          ai = Ci;
          aj = Ci - diff;
        }
      } else {
        if (aj > Cj) {
          aj = Cj;
          ai = Cj + diff;
        }
      }
    } else {
      double quad = qd_[i] + qd_[j] - 2 * Qij;
      if (quad <= 0) quad = kTau;
      const double delta = (G_[i] - G_[j]) / quad;
      const double sum = ai + aj;
      ai -= delta;
      aj += delta;
      if (sum > Ci) {
        if (ai > Ci) {
          ai = Ci;
          aj = sum - Ci;
        }
      } else {
        if (aj < 0) {
          aj = 0;
          ai = sum;
        }
      }
      if (sum > Cj) {
        if (aj > Cj) {
          aj = Cj;
          ai = sum - Cj;
        }
      } else {
        if (ai < 0) {
          ai = 0;
          aj = sum;
        }
      }
    }
    const double dai = ai - old_ai, daj = aj - old_aj;
    const bool ui = is_upper(i), uj = is_upper(j);
    set_status(i);
    set_status(j);

    // G_t += Q_ti da_i + Q_tj da_j, and the next i = argmax over I_up of -y_t G_t.
    gmax_ = update_gradient(G_.data(), y_.data(), active_index(), up_ok_.data(), Ki, Kj, yi * dai, yj * daj, active_,
                            buf_.data());
    i_ = last_index_of(buf_.data(), active_, gmax_);
    // G_bar needs the columns over all variables, shrunk ones included (as LIBSVM's
    // get_Q(i, l)): the full-length columns of the shared cache.
    const int32_t* row = row_.data();
    if (ui != is_upper(i)) {
      const float* Fi = cache_.get(row_[i]);
      const double c = (ui ? -Ci : Ci) * yi;
      for (int64_t t = 0; t < m_; ++t) G_bar_[t] += c * y_[t] * static_cast<double>(Fi[row[t]]);
    }
    if (uj != is_upper(j)) {
      const float* Fj = cache_.get(row_[j]);
      const double c = (uj ? -Cj : Cj) * yj;
      for (int64_t t = 0; t < m_; ++t) G_bar_[t] += c * y_[t] * static_cast<double>(Fj[row[t]]);
    }
  }

  // Columns over the active variables. Once shrinking has left at most half of the rows
  // active (large problems only), the active rows are copied into a compact KernelMatrix
  // with a cache of its own: columns then cost the active rows only and many more fit in
  // the cache, which is how LIBSVM keeps large problems cheap. kidx_ maps positions to
  // compact rows; without compaction columns come from the shared cache, indexed by row_.
  const float* active_column(int64_t t) { return compact_ ? compact_cache_->get(kidx_[t]) : cache_.get(row_[t]); }
  const int32_t* active_index() const { return compact_ ? kidx_.data() : row_.data(); }

  void maybe_compact() {
    const int64_t current = compact_ ? compact_kernel_->rows() : m_;
    if (m_ < kCompactMinVariables || !kernel_.can_subset() || 2 * active_ > current || active_ < 2) return;
    std::vector<int32_t> rows(row_.begin(), row_.begin() + active_);
    compact_cache_.reset();
    compact_kernel_ = std::make_unique<KernelMatrix>(kernel_, rows);
    const double bytes = opt_.cache_mb * 1024.0 * 1024.0;
    compact_cache_ = std::make_unique<ColumnCache>(
        *compact_kernel_, static_cast<int64_t>(bytes / (static_cast<double>(active_) * sizeof(float))));
    kidx_.assign(static_cast<size_t>(m_), -1);
    for (int64_t t = 0; t < active_; ++t) kidx_[t] = static_cast<int32_t>(t);
    compact_ = true;
  }

  // All variables active again (gradient reconstructed); the compact rows no longer cover them.
  void unshrink_all() {
    reconstruct_gradient();
    active_ = m_;
    compact_ = false;
    compact_cache_.reset();
    compact_kernel_.reset();
  }

  bool be_shrunk(int64_t t, double gmax1, double gmax2) const {
    if (is_upper(t)) return y_[t] > 0 ? -G_[t] > gmax1 : -G_[t] > gmax2;
    if (is_lower(t)) return y_[t] > 0 ? G_[t] > gmax2 : G_[t] > gmax1;
    return false;
  }

  void shrink() {
    double gmax1 = -kInf, gmax2 = -kInf;  // max over I_up of -yG; max over I_low of yG
    for (int64_t t = 0; t < active_; ++t) {
      const double v = -static_cast<double>(y_[t]) * G_[t];
      if (up_ok_[t]) gmax1 = std::max(gmax1, v);
      if (low_ok_[t]) gmax2 = std::max(gmax2, -v);
    }
    if (!unshrink_ && gmax1 + gmax2 <= opt_.tol * 10) {
      unshrink_ = true;
      unshrink_all();
    }
    for (int64_t t = 0; t < active_; ++t) {
      if (!be_shrunk(t, gmax1, gmax2)) continue;
      --active_;
      while (active_ > t) {
        if (!be_shrunk(active_, gmax1, gmax2)) {
          swap_positions(t, active_);
          break;
        }
        --active_;
      }
    }
    maybe_compact();
  }

  // G of the shrunk variables from G_bar and the free variables' columns.
  void reconstruct_gradient() {
    if (active_ == m_) return;
    for (int64_t t = active_; t < m_; ++t) G_[t] = G_bar_[t] + p_[t];
    int64_t nr_free = 0;
    for (int64_t t = 0; t < active_; ++t) nr_free += is_free(t);
    const int32_t* row = row_.data();
    if (nr_free * m_ > 2 * active_ * (m_ - active_)) {
      for (int64_t s = active_; s < m_; ++s) {
        const float* Ks = cache_.get(row[s]);
        double acc = 0.0;
        for (int64_t t = 0; t < active_; ++t)
          if (is_free(t)) acc += alpha_[t] * y_[t] * static_cast<double>(Ks[row[t]]);
        G_[s] += y_[s] * acc;
      }
    } else {
      for (int64_t t = 0; t < active_; ++t) {
        if (!is_free(t)) continue;
        const float* Kt = cache_.get(row[t]);
        const double c = alpha_[t] * y_[t];
        for (int64_t s = active_; s < m_; ++s) G_[s] += c * y_[s] * static_cast<double>(Kt[row[s]]);
      }
    }
  }

  double compute_rho() const {
    int64_t nr_free = 0;
    double ub = kInf, lb = -kInf, sum_free = 0.0;
    for (int64_t t = 0; t < active_; ++t) {
      const double yG = y_[t] * G_[t];
      if (is_upper(t)) {
        if (y_[t] < 0) ub = std::min(ub, yG);
        else lb = std::max(lb, yG);
      } else if (is_lower(t)) {
        if (y_[t] > 0) ub = std::min(ub, yG);
        else lb = std::max(lb, yG);
      } else {
        ++nr_free;
        sum_free += yG;
      }
    }
    return nr_free > 0 ? sum_free / nr_free : (ub + lb) / 2;
  }

  ColumnCache& cache_;           // full-length columns, shared by all sub-problems of the fit
  const KernelMatrix& kernel_;
  const SolverOptions& opt_;
  bool compact_ = false;
  std::unique_ptr<KernelMatrix> compact_kernel_;
  std::unique_ptr<ColumnCache> compact_cache_;
  std::vector<int32_t> kidx_;
  int64_t m_, active_ = 0;
  bool unshrink_ = false;
  double gmax_ = -kInf;
  int64_t i_ = -1;
  std::vector<int32_t> row_, active_set_;
  std::vector<double> y_;  // +1 / -1
  std::vector<double> buf_;  // per-pass scratch: masked v or second-order scores
  std::vector<double> p_, C_, alpha_, G_, G_bar_, qd_;
  std::vector<int8_t> status_;
  std::vector<uint8_t> up_ok_, low_ok_;
};

}  // namespace

Solution smo_solve(const SubProblem& problem, ColumnCache& cache, const KernelMatrix& kernel,
                   const SolverOptions& options) {
  const size_t m = problem.row.size();
  FL_CHECK(m > 0 && problem.y.size() == m && problem.p.size() == m && problem.C.size() == m,
           "svm: inconsistent sub-problem sizes.");
  FL_CHECK(options.tol > 0, "svm: argument 'tol' must be > 0, got ", options.tol, ".");
  Solver solver(problem, cache, kernel, options);
  return solver.run();
}

}  // namespace fl::svm

// CPU perceptron: the per-sample loop over a shuffled index, dense float64 rows. Each binary
// problem owns its weights, so the one-vs-rest problems run on separate threads with no
// sharing; inside a problem the work is one d-long dot product per sample plus one axpy per
// mistake, both SIMD loops in the multiversioned driver.
#include "perceptron.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

#include "fastlearn/simd.h"

namespace fl::linear_model {
namespace {

// splitmix64: a small, well-mixed generator; each problem gets its own stream.
struct SplitMix64 {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  // Uniform in [0, bound) by Lemire's multiply-shift (bias below 2^-40 for our sizes).
  uint64_t below(uint64_t bound) {
    return static_cast<uint64_t>((static_cast<unsigned __int128>(next()) * bound) >> 64);
  }
};

// Dot product with 16 independent partial sums: one accumulator would chain every FMA on the
// previous one (4-cycle latency each), which for d ~ 100 costs more than the loads.
FL_ALWAYS_INLINE double dot(const double* __restrict a, const double* __restrict b, int64_t d) {
  double acc[16] = {0.0};
  int64_t j = 0;
  for (; j + 16 <= d; j += 16) {
#pragma omp simd
    for (int t = 0; t < 16; ++t) acc[t] += a[j + t] * b[j + t];
  }
  double s = 0.0;
  for (; j < d; ++j) s += a[j] * b[j];
#pragma omp simd reduction(+ : s)
  for (int t = 0; t < 16; ++t) s += acc[t];
  return s;
}

FL_ALWAYS_INLINE void axpy(double alpha, const double* __restrict x, double* __restrict y, int64_t d) {
#pragma omp simd
  for (int64_t j = 0; j < d; ++j) y[j] += alpha * x[j];
}

constexpr int64_t kPrefetchAhead = 2;

FL_ALWAYS_INLINE void prefetch_row(const double* row, int64_t d) {
  const char* p = reinterpret_cast<const char*>(row);
  const int64_t bytes = d * static_cast<int64_t>(sizeof(double));
  for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(p + off, 0, 3);
}

struct Problem {
  const double* X;
  const int64_t* y;
  const double* sw;
  const uint8_t* val;
  int64_t n, d;
  int64_t positive;
  double pos_w, neg_w;
  double* w;
  double* b;
  double* u;
  double* ub;
  double* steps;
  int64_t* n_iter;
  int64_t* n_updates;
};

// The weighted training error of (w, b), mistakes counted as in the update rule (y p <= 0).
FL_ALWAYS_INLINE double training_error(const Problem& pr, const double* w, double b) {
  double err = 0.0;
  for (int64_t i = 0; i < pr.n; ++i) {
    if (pr.val[i]) continue;
    const double yi = pr.y[i] == pr.positive ? 1.0 : -1.0;
    const double p = dot(pr.X + i * pr.d, w, pr.d) + b;
    if (yi * p <= 0.0) err += pr.sw[i] * (yi > 0 ? pr.pos_w : pr.neg_w);
  }
  return err;
}

// Weighted accuracy of (w, b) on the held-out samples (scikit-learn's validation score).
FL_ALWAYS_INLINE double validation_score(const Problem& pr, const double* w, double b) {
  double hit = 0.0, total = 0.0;
  for (int64_t i = 0; i < pr.n; ++i) {
    if (!pr.val[i]) continue;
    const double yi = pr.y[i] == pr.positive ? 1.0 : -1.0;
    const double p = dot(pr.X + i * pr.d, w, pr.d) + b;
    const double pred = p > 0.0 ? 1.0 : -1.0;
    total += pr.sw[i];
    if (pred == yi) hit += pr.sw[i];
  }
  return total > 0.0 ? hit / total : 0.0;
}

// One training sample as the epoch loop sees it: the row, its label and its update weight
// (sample_weight times class weight). The shuffle permutes these records, so the loop reads
// labels and weights sequentially and only the rows of X at random.
struct Sample {
  int64_t row;
  double y;       // +1 or -1
  double weight;  // sample_weight * class weight
};

FL_MULTIVERSION
void train_problem(const Problem& pr, const PerceptronParams& prm, uint64_t seed) {
  const int64_t n = pr.n, d = pr.d;
  std::vector<Sample> order;
  order.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    if (pr.val[i]) continue;
    const bool pos = pr.y[i] == pr.positive;
    order.push_back(Sample{i, pos ? 1.0 : -1.0, pr.sw[i] * (pos ? pr.pos_w : pr.neg_w)});
  }
  const int64_t n_train = static_cast<int64_t>(order.size());
  SplitMix64 rng{seed};
  double step = *pr.steps;
  const double a0 = static_cast<double>(prm.average_start);
  const bool average = prm.average_start > 0;
  double* w = pr.w;
  double b = *pr.b;

  std::vector<double> best_w, w_eval;
  double best_b = 0.0, best_err = std::numeric_limits<double>::infinity();
  if (prm.pocket) {
    best_w.assign(w, w + d);
    best_b = b;
    best_err = training_error(pr, w, b);
  }
  if (prm.early_stopping && average) w_eval.resize(static_cast<size_t>(d));

  double best_loss = std::numeric_limits<double>::infinity();
  double best_score = -std::numeric_limits<double>::infinity();
  int64_t no_improvement = 0, epoch = 0, updates = 0;
  for (epoch = 0; epoch < prm.max_iter; ++epoch) {
    if (prm.shuffle)
      for (int64_t i = n_train - 1; i > 0; --i) std::swap(order[i], order[rng.below(static_cast<uint64_t>(i + 1))]);
    double sumloss = 0.0;
    for (int64_t k = 0; k < n_train; ++k) {
      // Rows come in shuffled order, which the hardware prefetcher cannot follow: fetch the
      // row kPrefetchAhead steps ahead so its memory latency overlaps this row's work.
      if (k + kPrefetchAhead < n_train) prefetch_row(pr.X + order[k + kPrefetchAhead].row * d, d);
      const Sample smp = order[k];
      const double* x = pr.X + smp.row * d;
      const double z = smp.y * (dot(x, w, d) + b);
      step += 1.0;
      if (z <= 0.0) {
        sumloss -= z;
        const double upd = prm.eta0 * smp.y * smp.weight;
        if (upd != 0.0) {
          ++updates;
          axpy(upd, x, w, d);
          if (prm.fit_intercept) b += upd;
          if (average && step >= a0) {
            const double c = upd * (step - a0);  // (local step - 1) with local step = step - a0 + 1
            axpy(c, x, pr.u, d);
            if (prm.fit_intercept) *pr.ub += c;
          }
        }
      }
    }
    *pr.b = b;
    if (prm.pocket) {
      const double err = training_error(pr, pr.w, *pr.b);
      if (err < best_err) {
        best_err = err;
        std::copy(pr.w, pr.w + d, best_w.begin());
        best_b = *pr.b;
      }
    }
    if (prm.early_stopping) {
      double score;
      if (average && step >= a0) {
        const double m = step - a0 + 1.0;
        for (int64_t j = 0; j < d; ++j) w_eval[j] = pr.w[j] - pr.u[j] / m;
        score = validation_score(pr, w_eval.data(), *pr.b - *pr.ub / m);
      } else {
        score = validation_score(pr, pr.w, *pr.b);
      }
      if (prm.has_tol && score < best_score + prm.tol) ++no_improvement; else no_improvement = 0;
      if (score > best_score) best_score = score;
    } else {
      if (prm.has_tol && sumloss > best_loss - prm.tol * static_cast<double>(n_train)) ++no_improvement;
      else no_improvement = 0;
      if (sumloss < best_loss) best_loss = sumloss;
    }
    if (no_improvement >= prm.n_iter_no_change) {
      ++epoch;
      break;
    }
  }
  if (prm.pocket) {
    std::copy(best_w.begin(), best_w.end(), pr.w);
    *pr.b = best_b;
  }
  *pr.steps = step;
  *pr.n_iter = std::min<int64_t>(epoch, prm.max_iter);
  *pr.n_updates = updates;
}

}  // namespace

void perceptron_fit(const View& X, const View& y, const View& sample_weight, const View& validation_mask,
                    const View& positive_class, const View& pos_weight, const View& neg_weight,
                    const View& coef, const View& intercept, const View& avg_u, const View& avg_u_b,
                    const View& steps, const View& n_iter_out, const View& n_updates_out,
                    const PerceptronParams& params) {
  const char* op = "perceptron_fit";
  check_dtype(X, {DType::f64}, op);
  check_dtype(y, {DType::i64}, op);
  check_dtype(sample_weight, {DType::f64}, op);
  check_dtype(validation_mask, {DType::u8}, op);
  check_dtype(positive_class, {DType::i64}, op);
  for (const View* v : {&pos_weight, &neg_weight, &coef, &intercept, &avg_u, &avg_u_b, &steps})
    check_dtype(*v, {DType::f64}, op);
  check_dtype(n_iter_out, {DType::i64}, op);
  check_dtype(n_updates_out, {DType::i64}, op);
  for (const View* v : {&X, &y, &sample_weight, &validation_mask, &positive_class, &pos_weight, &neg_weight, &coef,
                        &intercept, &avg_u, &avg_u_b, &steps, &n_iter_out, &n_updates_out}) {
    FL_CHECK(v->device == Device::cpu, op, ": argument '", v->name, "' must be on the CPU.");
    check_contiguous(*v, op);
  }
  FL_CHECK(X.ndim() == 2, op, ": argument 'X' must be 2-D (n_samples, n_features).");
  const int64_t n = X.size(0), d = X.size(1);
  const int64_t P = positive_class.numel();
  FL_CHECK(y.numel() == n && sample_weight.numel() == n && validation_mask.numel() == n, op,
           ": 'y', 'sample_weight' and 'validation_mask' must have n_samples = ", n, " entries.");
  FL_CHECK(coef.ndim() == 2 && coef.size(0) == P && coef.size(1) == d && avg_u.shape == coef.shape, op,
           ": 'coef' and 'avg_u' must be (n_problems, n_features) = (", P, ", ", d, ").");
  for (const View* v : {&pos_weight, &neg_weight, &intercept, &avg_u_b, &steps, &n_iter_out, &n_updates_out})
    FL_CHECK(v->numel() == P, op, ": argument '", v->name, "' must have n_problems = ", P, " entries.");
  FL_CHECK(params.max_iter >= 1, op, ": 'max_iter' must be >= 1.");
  FL_CHECK(params.n_iter_no_change >= 1, op, ": 'n_iter_no_change' must be >= 1.");
  FL_CHECK(std::isfinite(params.eta0) && params.eta0 > 0, op, ": 'eta0' must be a finite number > 0.");

  std::vector<Problem> problems(static_cast<size_t>(P));
  for (int64_t p = 0; p < P; ++p) {
    problems[p] = Problem{X.ptr<double>(), y.ptr<int64_t>(), sample_weight.ptr<double>(), validation_mask.ptr<uint8_t>(),
                          n, d, positive_class.ptr<int64_t>()[p], pos_weight.ptr<double>()[p],
                          neg_weight.ptr<double>()[p], coef.ptr<double>() + p * d, intercept.ptr<double>() + p,
                          avg_u.ptr<double>() + p * d, avg_u_b.ptr<double>() + p, steps.ptr<double>() + p,
                          n_iter_out.ptr<int64_t>() + p, n_updates_out.ptr<int64_t>() + p};
  }
  const int threads = static_cast<int>(std::min<int64_t>(P, omp_get_max_threads()));
  // One problem per task; problems share only read-only inputs.
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (threads > 1)
  for (int64_t p = 0; p < P; ++p)
    train_problem(problems[p], params, params.seed * 0x2545f4914f6cdd1dULL + static_cast<uint64_t>(p) + 1);
}

}  // namespace fl::linear_model

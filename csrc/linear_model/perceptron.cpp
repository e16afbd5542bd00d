// CPU perceptron: the per-sample loop over a shuffled index, dense float64 rows. The
// one-vs-rest problems are split into one group per thread (each problem owns its weights, so
// threads share nothing they write); a group walks one shuffled order and scores every row
// against all its problems while the row is in L1. Per sample and problem the work is one
// d-long dot product plus one axpy per mistake, SIMD loops in the multiversioned driver.
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

// One training sample as the epoch loop sees it: the row, its class and its sample weight.
// The shuffle permutes these records, so the loop reads labels and weights sequentially and
// only the rows of X at random.
struct Sample {
  int64_t row;
  int64_t cls;
  double sw;
};

// Per-problem loop state (the stopping rule and the pocket are per problem).
struct ProblemState {
  double b = 0.0, step = 0.0, sumloss = 0.0;
  double best_loss = std::numeric_limits<double>::infinity();
  double best_score = -std::numeric_limits<double>::infinity();
  double best_err = std::numeric_limits<double>::infinity(), best_b = 0.0;
  std::vector<double> best_w, w_eval;
  int64_t no_improvement = 0, epochs = 0, updates = 0;
  bool done = false;
};

// Trains a group of one-vs-rest problems on one thread. They share one shuffled order, so
// each row of X is fetched from memory once per epoch for the whole group, not once per
// problem (the loop is bound by those random row reads, not by arithmetic).
FL_MULTIVERSION
void train_group(const Problem* probs, int64_t G, const PerceptronParams& prm, uint64_t seed, int64_t group) {
  const Problem& p0 = probs[0];
  const int64_t n = p0.n, d = p0.d;
  std::vector<Sample> order;
  order.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    if (!p0.val[i]) order.push_back(Sample{i, p0.y[i], p0.sw[i]});
  const int64_t n_train = static_cast<int64_t>(order.size());
  SplitMix64 rng{seed};
  const double a0 = static_cast<double>(prm.average_start);
  const bool average = prm.average_start > 0;

  std::vector<ProblemState> st(static_cast<size_t>(G));
  for (int64_t q = 0; q < G; ++q) {
    const Problem& pr = probs[q];
    ProblemState& s = st[q];
    s.b = *pr.b;
    s.step = *pr.steps;
    if (prm.pocket) {
      s.best_w.assign(pr.w, pr.w + d);
      s.best_b = s.b;
      s.best_err = training_error(pr, pr.w, s.b);
    }
    if (prm.early_stopping && average) s.w_eval.resize(static_cast<size_t>(d));
  }
  int64_t active = G;
  for (int64_t epoch = 0; epoch < prm.max_iter && active > 0; ++epoch) {
    if (prm.shuffle)
      for (int64_t i = n_train - 1; i > 0; --i) std::swap(order[i], order[rng.below(static_cast<uint64_t>(i + 1))]);
    for (auto& s : st) s.sumloss = 0.0;
    for (int64_t k = 0; k < n_train; ++k) {
      // Rows come in shuffled order, which the hardware prefetcher cannot follow: fetch the
      // row kPrefetchAhead steps ahead so its memory latency overlaps this row's work.
      if (k + kPrefetchAhead < n_train) prefetch_row(p0.X + order[k + kPrefetchAhead].row * d, d);
      const Sample smp = order[k];
      const double* x = p0.X + smp.row * d;
      for (int64_t q = 0; q < G; ++q) {
        ProblemState& s = st[q];
        if (s.done) continue;
        const Problem& pr = probs[q];
        const bool pos = smp.cls == pr.positive;
        const double yq = pos ? 1.0 : -1.0;
        const double z = yq * (dot(x, pr.w, d) + s.b);
        s.step += 1.0;
        if (z <= 0.0) {
          s.sumloss -= z;
          const double upd = prm.eta0 * yq * smp.sw * (pos ? pr.pos_w : pr.neg_w);
          if (upd != 0.0) {
            ++s.updates;
            axpy(upd, x, pr.w, d);
            if (prm.fit_intercept) s.b += upd;
            if (average && s.step >= a0) {
              const double c = upd * (s.step - a0);  // (local step - 1), local step = step - a0 + 1
              axpy(c, x, pr.u, d);
              if (prm.fit_intercept) *pr.ub += c;
            }
          }
        }
      }
    }
    for (int64_t q = 0; q < G; ++q) {
      ProblemState& s = st[q];
      if (s.done) continue;
      const Problem& pr = probs[q];
      *pr.b = s.b;
      s.epochs = epoch + 1;
      if (prm.pocket) {
        const double err = training_error(pr, pr.w, s.b);
        if (err < s.best_err) {
          s.best_err = err;
          std::copy(pr.w, pr.w + d, s.best_w.begin());
          s.best_b = s.b;
        }
      }
      if (prm.early_stopping) {
        double score;
        if (average && s.step >= a0) {
          const double m = s.step - a0 + 1.0;
          for (int64_t j = 0; j < d; ++j) s.w_eval[j] = pr.w[j] - pr.u[j] / m;
          score = validation_score(pr, s.w_eval.data(), s.b - *pr.ub / m);
        } else {
          score = validation_score(pr, pr.w, s.b);
        }
        if (prm.has_tol && score < s.best_score + prm.tol) ++s.no_improvement; else s.no_improvement = 0;
        if (score > s.best_score) s.best_score = score;
      } else {
        if (prm.has_tol && s.sumloss > s.best_loss - prm.tol * static_cast<double>(n_train)) ++s.no_improvement;
        else s.no_improvement = 0;
        if (s.sumloss < s.best_loss) s.best_loss = s.sumloss;
      }
      if (s.no_improvement >= prm.n_iter_no_change) {
        s.done = true;
        --active;
      }
    }
    if (prm.on_epoch && !prm.on_epoch(group, epoch + 1)) break;
  }
  for (int64_t q = 0; q < G; ++q) {
    const Problem& pr = probs[q];
    ProblemState& s = st[q];
    if (prm.pocket) {
      std::copy(s.best_w.begin(), s.best_w.end(), pr.w);
      *pr.b = s.best_b;
    }
    *pr.steps = s.step;
    *pr.n_iter = s.epochs;
    *pr.n_updates = s.updates;
  }
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
  // Problems are split into one contiguous group per thread; a group shares its row reads.
  const int threads = static_cast<int>(std::min<int64_t>(P, omp_get_max_threads()));
#pragma omp parallel for schedule(static, 1) num_threads(threads) if (threads > 1)
  for (int g = 0; g < threads; ++g) {
    const int64_t begin = P * g / threads, end = P * (g + 1) / threads;
    if (begin < end)
      train_group(problems.data() + begin, end - begin, params,
                  params.seed * 0x2545f4914f6cdd1dULL + static_cast<uint64_t>(g) + 1, g);
  }
}

}  // namespace fl::linear_model

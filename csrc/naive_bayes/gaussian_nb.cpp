// CPU Gaussian naive Bayes log-likelihood. scikit-learn forms (X - theta_k)^2 / var_k as an
// n x d temporary per class (several passes over memory per class); here each row of X is
// read once and scored against all classes while it sits in L1, rows split across threads.
// The difference form (not the expanded BLAS form x^2 - 2 x theta + theta^2) keeps full
// precision when a variance is tiny next to the data, as var_smoothing allows.
#include "gaussian_nb.h"

#include <cmath>
#include <vector>

#include "fastlearn/parallel.h"
#include "fastlearn/simd.h"

namespace fl::naive_bayes {
namespace {

template <typename T>
FL_ALWAYS_INLINE void jll_rows(const T* X, const double* theta, const double* inv_var, const double* constant,
                               double* jll, int64_t begin, int64_t end, int64_t d, int64_t K) {
  for (int64_t i = begin; i < end; ++i) {
    const T* x = X + i * d;
    for (int64_t k = 0; k < K; ++k) {
      const double* t = theta + k * d;
      const double* iv = inv_var + k * d;
      double s = 0.0;
#pragma omp simd reduction(+ : s)
      for (int64_t j = 0; j < d; ++j) {
        const double diff = static_cast<double>(x[j]) - t[j];
        s += diff * diff * iv[j];
      }
      jll[i * K + k] = constant[k] - 0.5 * s;
    }
  }
}

FL_MULTIVERSION
void jll_rows_f64(const double* X, const double* theta, const double* inv_var, const double* constant, double* jll,
                  int64_t begin, int64_t end, int64_t d, int64_t K) {
  jll_rows(X, theta, inv_var, constant, jll, begin, end, d, K);
}

FL_MULTIVERSION
void jll_rows_f32(const float* X, const double* theta, const double* inv_var, const double* constant, double* jll,
                  int64_t begin, int64_t end, int64_t d, int64_t K) {
  jll_rows(X, theta, inv_var, constant, jll, begin, end, d, K);
}

}  // namespace

void gaussian_jll(const View& X, const View& theta, const View& var, const View& log_prior, const View& jll) {
  const char* op = "gaussian_jll";
  check_dtype(X, {DType::f64, DType::f32}, op);
  for (const View* v : {&theta, &var, &log_prior, &jll}) check_dtype(*v, {DType::f64}, op);
  for (const View* v : {&X, &theta, &var, &log_prior, &jll}) {
    FL_CHECK(v->device == Device::cpu, op, ": argument '", v->name, "' must be on the CPU.");
    check_contiguous(*v, op);
  }
  FL_CHECK(X.ndim() == 2 && theta.ndim() == 2, op, ": 'X' and 'theta' must be 2-D.");
  const int64_t n = X.size(0), d = X.size(1), K = theta.size(0);
  FL_CHECK(theta.size(1) == d, op, ": X has ", d, " features but theta has ", theta.size(1), ".");
  FL_CHECK(var.shape == theta.shape, op, ": 'var' must have the shape of 'theta'.");
  FL_CHECK(log_prior.numel() == K, op, ": 'log_prior' must have n_classes = ", K, " entries.");
  FL_CHECK(jll.ndim() == 2 && jll.size(0) == n && jll.size(1) == K, op, ": 'jll' must be (", n, ", ", K, ").");

  const double* v = var.ptr<double>();
  std::vector<double> inv_var(static_cast<size_t>(K * d)), constant(static_cast<size_t>(K));
  for (int64_t k = 0; k < K; ++k) {
    double log_det = 0.0;
    for (int64_t j = 0; j < d; ++j) {
      const double vk = v[k * d + j];
      FL_CHECK(vk > 0.0, op, ": 'var' must be positive (class ", k, ", feature ", j, " is ", vk,
               "); increase var_smoothing.");
      inv_var[k * d + j] = 1.0 / vk;
      log_det += std::log(2.0 * M_PI * vk);
    }
    constant[k] = log_prior.ptr<double>()[k] - 0.5 * log_det;
  }
  auto rows = [&](int64_t begin, int64_t end) {
    if (X.dtype == DType::f64)
      jll_rows_f64(X.ptr<double>(), theta.ptr<double>(), inv_var.data(), constant.data(), jll.ptr<double>(), begin, end,
                   d, K);
    else
      jll_rows_f32(X.ptr<float>(), theta.ptr<double>(), inv_var.data(), constant.data(), jll.ptr<double>(), begin, end,
                   d, K);
  };
  // Below ~4M multiply-adds one thread finishes before a parallel region pays for itself
  // (waking a second thread costs tens of microseconds, milliseconds on a busy machine).
  if (n * d * K < (int64_t{1} << 22))
    rows(0, n);
  else
    parallel_for(n, d * K, rows);
}

}  // namespace fl::naive_bayes

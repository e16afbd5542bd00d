// Fit drivers over the buffer boundary: one-vs-one C-SVC over all class pairs with one
// shared kernel-column cache, and epsilon-SVR. Outputs are preallocated by the caller.
#pragma once

#include <cstdint>
#include <functional>

#include "fastlearn/view.h"
#include "kernel.h"

namespace fl::svm {

struct FitOptions {
  KernelSpec kernel;
  double tol = 1e-3;
  bool shrinking = true;
  int64_t max_iter = -1;
  double cache_mb = 200.0;
  // poll(pair, iterations): progress and interruption; may throw.
  std::function<void(int64_t, int64_t)> poll;
};

// x: n x d float32, rows grouped by class (precomputed kernel: the n x n Gram matrix in the
// same order); class_start: int64 (k + 1) offsets of each class's rows; sample_c: float64 (n)
// upper bounds C * class_weight * sample_weight. For each pair (a, b), a < b, in the order
// (0,1), (0,2), ..., (1,2), ...: coef[p, t] = y_t alpha_t for the rows t of classes a (y = +1)
// and b (y = -1), 0 elsewhere; rho[p]; objective[p]; iterations[p] (int64).
// Returns the number of pairs that stopped at the iteration bound.
int64_t svc_fit(const View& x, const View& class_start, const View& sample_c, const View& coef, const View& rho,
                const View& objective, const View& iterations, const FitOptions& options);

// epsilon-SVR: target (n) float64; coef[t] = alpha_t - alpha*_t; rho, objective (1) float64,
// iterations (1) int64. Returns 1 when it stopped at the iteration bound, else 0.
int64_t svr_fit(const View& x, const View& target, const View& sample_c, double epsilon, const View& coef,
                const View& rho, const View& objective, const View& iterations, const FitOptions& options);

}  // namespace fl::svm

// The SMO solver of the SVM dual (LIBSVM's problem form, Fan, Chen & Lin 2005):
//   min_a 0.5 a'Qa + p'a   s.t.  y'a = 0,  0 <= a_t <= C_t,   Q_st = y_s y_t K(g_s, g_t)
// where variable t is tied to training row g_t of a shared KernelMatrix/ColumnCache. C-SVC
// (one pair of classes) and epsilon-SVR (two variables per row) are both this problem.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "kernel.h"

namespace fl::svm {

struct SubProblem {
  std::vector<int32_t> row;  // g_t: the kernel row of each variable
  std::vector<float> y;      // +1 / -1
  std::vector<double> p;     // linear term
  std::vector<double> C;     // upper bound of each variable
};

struct SolverOptions {
  double tol = 1e-3;        // stop when the maximal violating pair's gap is below tol
  bool shrinking = true;
  int64_t max_iter = -1;    // -1: LIBSVM's bound, max(10^7, 100 * variables)
  double cache_mb = 200.0;  // budget of the cache over the compacted active set (see smo.cpp)
  // Called every few thousand iterations with the iteration count (for progress and
  // interruption); it may throw to abort the solve.
  std::function<void(int64_t)> poll;
};

struct Solution {
  std::vector<double> alpha;  // per variable, in the SubProblem's order
  double rho = 0.0;           // decision = sum_t y_t a_t K(g_t, x) - rho
  double objective = 0.0;     // 0.5 a'Qa + p'a at the solution
  int64_t iterations = 0;
  bool converged = true;      // false: stopped at the iteration bound
};

Solution smo_solve(const SubProblem& problem, ColumnCache& cache, const KernelMatrix& kernel,
                   const SolverOptions& options);

}  // namespace fl::svm

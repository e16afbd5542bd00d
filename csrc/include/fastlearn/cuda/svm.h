// CUDA launcher of the svm domain (kernels/cuda/svm/smo.cu): binary C-SVC by batched
// working-set SMO. Launches go on the views' stream; the only host synchronisation is the
// convergence check once per outer iteration. Workspace memory comes from the caller.
#pragma once

#include <cstdint>

#include "fastlearn/view.h"

namespace fl::cuda {

struct SvmGpuOptions {
  int kernel;           // fl::svm::KernelKind code (precomputed is not served on the GPU)
  double gamma, coef0;
  int degree;
  double tol;
  int64_t max_iter;     // outer iterations; -1: max(10000, 100 * n / working_set)
  int64_t working_set;  // q: variables per sub-problem, a power of two in [2, 1024]
};

// Bytes of the uint8 workspace svm_binary_fit needs for n samples and working set q.
int64_t svm_workspace_bytes(int64_t n, int64_t d, int64_t q);

// x: n x d float32; y: n float32 (+1/-1); sample_c: n float64; alpha: n float64 (in: 0,
// out: the solution); grad: n float64 (in: -1, out: the gradient Q alpha - 1); workspace:
// uint8 of svm_workspace_bytes; result: 2 float64 on the host side of the caller, filled
// with (final gap, converged). Returns the number of outer iterations.
int64_t svm_binary_fit(const View& x, const View& y, const View& sample_c, const View& alpha, const View& grad,
                       const View& workspace, const View& result, const SvmGpuOptions& options);

}  // namespace fl::cuda

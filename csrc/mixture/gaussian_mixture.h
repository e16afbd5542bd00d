// The Gaussian-mixture pass over data: per-component log N(x | mu_k, Sigma_k) from the
// precision Cholesky factors, and the fused E-step that turns them into per-sample
// log-likelihoods and the M-step's sufficient statistics without an N x K matrix.
#pragma once

#include <optional>

#include "fastlearn/view.h"

namespace fl::mixture {

// 'spherical' is handed over as 'diag' (its factor repeated over the features).
enum class Covariance : int { full = 0, tied = 1, diag = 2 };

struct PassOutputs {
  std::optional<View> log_prob;   // N x K: offset_k - 0.5 * ||(x_n - mu_k) P_k||^2, same dtype as X
  std::optional<View> log_norm;   // N: log sum_k exp(log_prob[n, k]), same dtype as X
  std::optional<View> labels;     // N int64: argmax_k log_prob[n, k]
  // Sufficient statistics (float64), about the current means: with r_nk the responsibilities,
  // nk = sum_n r_nk; s1[k] = sum_n r_nk (x_n - mu_k);
  // s2[k] = sum_n r_nk (x_n - mu_k)(x_n - mu_k)^T (full: K x D x D) or its diagonal (diag: K x D).
  std::optional<View> nk, s1, s2;
};

// X: N x D; means: K x D; prec_chol: full K x D x D, tied D x D, diag K x D; offset: K (the
// log determinant, -D/2 log 2 pi, and, for an E-step, log weights). All of X's dtype
// (float32/float64), contiguous. Returns sum_n log_norm[n] (0 when nothing needs it).
// full_path (full covariance): 0 lets the kernel choose between the triangular products and the
// lifted ones (see gaussian_mixture.cpp), 1 and 2 force one of them.
double gaussian_mixture_pass(const View& X, const View& means, const View& prec_chol, const View& offset,
                             int covariance, const PassOutputs& out, int full_path = 0);

}  // namespace fl::mixture

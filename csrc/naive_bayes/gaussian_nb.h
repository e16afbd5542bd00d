// Gaussian naive Bayes joint log-likelihood, the hot path of GaussianNB.predict*: one pass
// over X with every class's parameters kept in cache.
#pragma once

#include "fastlearn/view.h"

namespace fl::naive_bayes {

// jll[i, k] = log_prior[k] - 0.5 * sum_j log(2 pi var[k, j]) - 0.5 * sum_j (X[i, j] - theta[k, j])^2 / var[k, j]
//   X          n x d  float64 or float32 (read as float64), contiguous
//   theta, var K x d  float64, contiguous; var > 0
//   log_prior  K      float64
//   jll        n x K  float64, contiguous (out)
void gaussian_jll(const View& X, const View& theta, const View& var, const View& log_prior, const View& jll);

}  // namespace fl::naive_bayes

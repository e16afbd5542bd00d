// Rosenblatt's perceptron, the epoch loop: one-vs-rest binary problems trained in parallel
// (one OpenMP task per problem), updates only on mistakes, with the stopping rules of
// scikit-learn's SGD (tol on the epoch loss, or early stopping on a held-out score).
#pragma once

#include <cstdint>
#include <functional>

#include "fastlearn/view.h"

namespace fl::linear_model {

struct PerceptronParams {
  double eta0 = 1.0;
  int64_t max_iter = 1000;
  bool has_tol = true;          // tol=None in Python turns the stopping rule off
  double tol = 1e-3;
  int64_t n_iter_no_change = 5;
  bool early_stopping = false;  // score on the samples whose validation_mask is 1
  bool shuffle = true;
  uint64_t seed = 0;
  bool fit_intercept = true;
  int64_t average_start = 0;    // 0: no averaging; else averaging starts at this sample count
  bool pocket = false;          // keep the weights with the fewest (weighted) training errors
  // Called by every thread group after each epoch with (group, epochs done); returning false
  // stops all training (Ctrl-C, progress bars). Empty: no calls. Must be thread-safe.
  std::function<bool(int64_t, int64_t)> on_epoch;
};

// Trains P binary problems in place. Problem p treats samples with y == positive_class[p] as
// +1 (weight pos_weight[p]) and all others as -1 (weight neg_weight[p]).
//   X               n x d   float64, contiguous
//   y               n       int64 class index
//   sample_weight   n       float64
//   validation_mask n       uint8 (1: held out for early stopping, never trained on)
//   positive_class  P int64; pos_weight, neg_weight: P float64
//   coef            P x d   float64, in/out (the plain, non-averaged weights)
//   intercept       P       float64, in/out
//   avg_u           P x d   float64, in/out: sum of update * (steps since averaging began - 1)
//   avg_u_b         P       float64, in/out: the same for the intercept
//   steps           P       float64, in/out: samples seen so far (global step counter)
//   n_iter_out      P int64 out: epochs run; n_updates_out P int64 out: mistakes made
void perceptron_fit(const View& X, const View& y, const View& sample_weight, const View& validation_mask,
                    const View& positive_class, const View& pos_weight, const View& neg_weight,
                    const View& coef, const View& intercept, const View& avg_u, const View& avg_u_b,
                    const View& steps, const View& n_iter_out, const View& n_updates_out,
                    const PerceptronParams& params);

}  // namespace fl::linear_model

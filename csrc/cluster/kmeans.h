// K-means assignment: nearest centre of each point (fused distances and argmin, no N x K
// matrix), with the Lloyd update's per-cluster sums and weights accumulated in the same pass.
#pragma once

#include <optional>

#include "fastlearn/view.h"

namespace fl::cluster {

struct AssignOutputs {
  View labels;                      // N int64
  std::optional<View> min_dist;     // N, X's dtype: squared distance to the nearest centre
  std::optional<View> sums, counts; // float64: K x D sum of w x per cluster, K sum of w
  bool inertia = true;              // false: skip the inertia (returned as 0) unless min_dist is asked
};

// X: N x D, centers: K x D, sample_weight: N (all of X's dtype, contiguous, CPU).
// Returns the inertia sum_n w_n ||x_n - c_label||^2 (float64).
double kmeans_assign(const View& X, const View& centers, const View& sample_weight, const AssignOutputs& out);

}  // namespace fl::cluster

// Bindings of the cluster domain: the fused k-means assignment.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "../cluster/kmeans.h"
#include "registry.h"

namespace py = pybind11;

FL_BINDINGS(cluster) {
  m.def(
      "kmeans_assign",
      [](const fl::View& X, const fl::View& centers, const fl::View& sample_weight, const fl::View& labels,
         std::optional<fl::View> min_dist, std::optional<fl::View> sums, std::optional<fl::View> counts,
         bool inertia) {
        fl::cluster::AssignOutputs out{labels, min_dist, sums, counts, inertia};
        return fl::cluster::kmeans_assign(X, centers, sample_weight, out);
      },
      py::arg("X"), py::arg("centers"), py::arg("sample_weight"), py::arg("labels"),
      py::arg("min_dist") = py::none(), py::arg("sums") = py::none(), py::arg("counts") = py::none(),
      py::arg("inertia") = true, py::call_guard<py::gil_scoped_release>(),
      "Nearest centre of each row of X into labels (int64); optional squared distance to it, and per-cluster "
      "weighted sums and weights (float64). Returns the weighted inertia (0 when inertia=False and no min_dist).");
}

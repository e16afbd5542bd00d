// Bindings of the naive_bayes domain: the Gaussian joint log-likelihood (CPU).
#include <pybind11/pybind11.h>

#include "../naive_bayes/gaussian_nb.h"
#include "registry.h"

namespace py = pybind11;

FL_BINDINGS(naive_bayes) {
  m.def("gaussian_nb_jll", &fl::naive_bayes::gaussian_jll, py::arg("X"), py::arg("theta"), py::arg("var"),
        py::arg("log_prior"), py::arg("jll"), py::call_guard<py::gil_scoped_release>(),
        "jll[i, k] = log prior_k + sum_j log N(X[i, j] | theta[k, j], var[k, j]) into the preallocated jll.");
}

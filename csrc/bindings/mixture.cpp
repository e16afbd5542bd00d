// Bindings of the mixture domain: the Gaussian-mixture pass (log-probabilities, fused E-step).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "../mixture/gaussian_mixture.h"
#include "registry.h"

namespace py = pybind11;

FL_BINDINGS(mixture) {
  m.def(
      "gaussian_mixture_pass",
      [](const fl::View& X, const fl::View& means, const fl::View& prec_chol, const fl::View& offset, int covariance,
         std::optional<fl::View> log_prob, std::optional<fl::View> log_norm, std::optional<fl::View> labels,
         std::optional<fl::View> nk, std::optional<fl::View> s1, std::optional<fl::View> s2, int full_path) {
        fl::mixture::PassOutputs out{log_prob, log_norm, labels, nk, s1, s2};
        return fl::mixture::gaussian_mixture_pass(X, means, prec_chol, offset, covariance, out, full_path);
      },
      py::arg("X"), py::arg("means"), py::arg("prec_chol"), py::arg("offset"), py::arg("covariance"),
      py::arg("log_prob") = py::none(), py::arg("log_norm") = py::none(), py::arg("labels") = py::none(),
      py::arg("nk") = py::none(), py::arg("s1") = py::none(), py::arg("s2") = py::none(), py::arg("full_path") = 0,
      py::call_guard<py::gil_scoped_release>(),
      "One pass over X: log_prob[n,k] = offset[k] - ||(x_n - mu_k) P_k||^2 / 2 (covariance 0 full, 1 tied, "
      "2 diag), optional log-sum-exp per sample, argmax labels and E-step statistics (nk, s1, s2 about the "
      "current means, float64). full_path (full covariance): 0 chooses, 1 triangular products, 2 lifted "
      "products. Returns the sum of the per-sample log-sum-exp.");
}

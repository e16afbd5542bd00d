// Bindings of the linear_model domain: the perceptron epoch loop (CPU).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <mutex>

#include "../linear_model/perceptron.h"
#include "registry.h"

namespace py = pybind11;
namespace lm = fl::linear_model;

FL_BINDINGS(linear_model) {
  m.def(
      "perceptron_fit",
      [](const fl::View& X, const fl::View& y, const fl::View& sample_weight, const fl::View& validation_mask,
         const fl::View& positive_class, const fl::View& pos_weight, const fl::View& neg_weight, const fl::View& coef,
         const fl::View& intercept, const fl::View& avg_u, const fl::View& avg_u_b, const fl::View& steps,
         const fl::View& n_iter, const fl::View& n_updates, double eta0, int64_t max_iter, bool has_tol, double tol,
         int64_t n_iter_no_change, bool early_stopping, bool shuffle, uint64_t seed, bool fit_intercept,
         int64_t average_start, bool pocket, py::object progress) {
        lm::PerceptronParams p;
        p.eta0 = eta0;
        p.max_iter = max_iter;
        p.has_tol = has_tol;
        p.tol = tol;
        p.n_iter_no_change = n_iter_no_change;
        p.early_stopping = early_stopping;
        p.shuffle = shuffle;
        p.seed = seed;
        p.fit_intercept = fit_intercept;
        p.average_start = average_start;
        p.pocket = pocket;
        // After each epoch: the group on OpenMP thread 0 (the Python main thread, the only one
        // where signal handlers run) checks for Ctrl-C and reports progress; any group stops
        // once that has failed. The weights keep what was learned up to the stop.
        std::mutex mu;
        bool stop = false;
        p.on_epoch = [&](int64_t group, int64_t epoch) -> bool {
          std::lock_guard<std::mutex> lock(mu);
          if (stop) return false;
          if (group != 0) return true;
          py::gil_scoped_acquire gil;
          if (PyErr_CheckSignals() != 0) {
            PyErr_Clear();
            stop = true;
            return false;
          }
          if (!progress.is_none()) {
            try {
              progress(epoch);
            } catch (py::error_already_set&) {
              stop = true;
              return false;
            }
          }
          return true;
        };
        {
          py::gil_scoped_release release;
          lm::perceptron_fit(X, y, sample_weight, validation_mask, positive_class, pos_weight, neg_weight, coef,
                             intercept, avg_u, avg_u_b, steps, n_iter, n_updates, p);
        }
        if (stop) {
          PyErr_SetNone(PyExc_KeyboardInterrupt);
          throw py::error_already_set();
        }
      },
      py::arg("X"), py::arg("y"), py::arg("sample_weight"), py::arg("validation_mask"), py::arg("positive_class"),
      py::arg("pos_weight"), py::arg("neg_weight"), py::arg("coef"), py::arg("intercept"), py::arg("avg_u"),
      py::arg("avg_u_b"), py::arg("steps"), py::arg("n_iter"), py::arg("n_updates"), py::arg("eta0"),
      py::arg("max_iter"), py::arg("has_tol"), py::arg("tol"), py::arg("n_iter_no_change"),
      py::arg("early_stopping"), py::arg("shuffle"), py::arg("seed"), py::arg("fit_intercept"),
      py::arg("average_start"), py::arg("pocket"), py::arg("progress") = py::none(),
      "Train one-vs-rest perceptron problems in place (see csrc/linear_model/perceptron.h). progress(epoch) is "
      "called after each epoch; Ctrl-C (or an exception from progress) stops training with KeyboardInterrupt.");
}

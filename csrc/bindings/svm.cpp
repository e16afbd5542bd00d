// Bindings of the svm domain: the CPU SMO fit drivers (C-SVC one-vs-one, epsilon-SVR) and,
// in CUDA builds, the GPU batched working-set solver.
#include <pybind11/functional.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "../svm/fit.h"
#include "fastlearn/cuda/svm.h"
#include "registry.h"

namespace py = pybind11;
namespace svm = fl::svm;

namespace {

svm::FitOptions make_options(int kernel, double gamma, double coef0, int degree, double tol, bool shrinking,
                             int64_t max_iter, double cache_mb, py::object progress) {
  FL_CHECK(kernel >= 0 && kernel <= 4, "svm fit: unknown kernel code ", kernel, ".");
  svm::FitOptions o;
  o.kernel.kind = static_cast<svm::KernelKind>(kernel);
  o.kernel.gamma = gamma;
  o.kernel.coef0 = coef0;
  o.kernel.degree = degree;
  o.tol = tol;
  o.shrinking = shrinking;
  o.max_iter = max_iter;
  o.cache_mb = cache_mb;
  // Runs on the solver's thread with the GIL released: take it, let Ctrl-C through, report.
  o.poll = [progress](int64_t done, int64_t iterations) {
    py::gil_scoped_acquire gil;
    if (PyErr_CheckSignals() != 0) throw py::error_already_set();
    if (!progress.is_none()) progress(done, iterations);
  };
  return o;
}

}  // namespace

FL_BINDINGS(svm) {
  m.def("svm_svc_fit",
        [](const fl::View& x, const fl::View& class_start, const fl::View& sample_c, const fl::View& coef,
           const fl::View& rho, const fl::View& objective, const fl::View& iterations, int kernel, double gamma,
           double coef0, int degree, double tol, bool shrinking, int64_t max_iter, double cache_mb,
           py::object progress) {
          const auto o = make_options(kernel, gamma, coef0, degree, tol, shrinking, max_iter, cache_mb, progress);
          py::gil_scoped_release release;
          return svm::svc_fit(x, class_start, sample_c, coef, rho, objective, iterations, o);
        },
        py::arg("x"), py::arg("class_start"), py::arg("sample_c"), py::arg("coef"), py::arg("rho"),
        py::arg("objective"), py::arg("iterations"), py::arg("kernel"), py::arg("gamma"), py::arg("coef0"),
        py::arg("degree"), py::arg("tol"), py::arg("shrinking"), py::arg("max_iter"), py::arg("cache_mb"),
        py::arg("progress") = py::none(),
        "One-vs-one C-SVC by SMO (WSS2, shrinking, shared column cache); returns the number of pairs that "
        "stopped at max_iter.");
  m.def("svm_svr_fit",
        [](const fl::View& x, const fl::View& target, const fl::View& sample_c, double epsilon, const fl::View& coef,
           const fl::View& rho, const fl::View& objective, const fl::View& iterations, int kernel, double gamma,
           double coef0, int degree, double tol, bool shrinking, int64_t max_iter, double cache_mb,
           py::object progress) {
          const auto o = make_options(kernel, gamma, coef0, degree, tol, shrinking, max_iter, cache_mb, progress);
          py::gil_scoped_release release;
          return svm::svr_fit(x, target, sample_c, epsilon, coef, rho, objective, iterations, o);
        },
        py::arg("x"), py::arg("target"), py::arg("sample_c"), py::arg("epsilon"), py::arg("coef"), py::arg("rho"),
        py::arg("objective"), py::arg("iterations"), py::arg("kernel"), py::arg("gamma"), py::arg("coef0"),
        py::arg("degree"), py::arg("tol"), py::arg("shrinking"), py::arg("max_iter"), py::arg("cache_mb"),
        py::arg("progress") = py::none(),
        "epsilon-SVR by SMO; returns 1 when it stopped at max_iter, else 0.");
#if defined(FASTLEARN_WITH_CUDA)
  m.def("svm_cuda_workspace_bytes", &fl::cuda::svm_workspace_bytes, py::arg("n"), py::arg("d"), py::arg("working_set"),
        "Bytes of workspace svm_svc_fit_cuda needs.");
  m.def("svm_svc_fit_cuda",
        [](const fl::View& x, const fl::View& y, const fl::View& sample_c, const fl::View& alpha, const fl::View& grad,
           const fl::View& workspace, const fl::View& result, int kernel, double gamma, double coef0, int degree,
           double tol, int64_t max_iter, int64_t working_set) {
          fl::cuda::SvmGpuOptions o{kernel, gamma, coef0, degree, tol, max_iter, working_set};
          py::gil_scoped_release release;
          return fl::cuda::svm_binary_fit(x, y, sample_c, alpha, grad, workspace, result, o);
        },
        py::arg("x"), py::arg("y"), py::arg("sample_c"), py::arg("alpha"), py::arg("grad"), py::arg("workspace"),
        py::arg("result"), py::arg("kernel"), py::arg("gamma"), py::arg("coef0"), py::arg("degree"), py::arg("tol"),
        py::arg("max_iter"), py::arg("working_set"),
        "Binary C-SVC on the GPU by batched working-set SMO; returns the iterations run.");
#endif
}

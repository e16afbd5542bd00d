// Bindings of the representations domain: softmax, log_softmax, one_hot (CPU and CUDA).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "../representations/one_hot.h"
#include "../representations/softmax.h"
#include "fastlearn/cuda/representations.h"
#include "registry.h"

namespace py = pybind11;
namespace rep = fl::representations;

namespace {

void require_cuda_build(const fl::View& v, const char* op) {
#if !defined(FASTLEARN_WITH_CUDA)
  FL_CHECK_RUNTIME(v.device != fl::Device::cuda, op, ": argument '", v.name,
                   "' is on a GPU but fastlearn was built without CUDA; rebuild with FASTLEARN_CUDA=ON "
                   "(nvcc on PATH) or move the tensor to the CPU.");
#else
  (void)v;
  (void)op;
#endif
}

}  // namespace

FL_BINDINGS(representations) {
  m.def("softmax_forward",
        [](const fl::View& x, const fl::View& y, int64_t dim, bool log) {
          require_cuda_build(x, "softmax");
#if defined(FASTLEARN_WITH_CUDA)
          if (x.device == fl::Device::cuda) return fl::cuda::softmax_forward(x, y, dim, log);
#endif
          rep::softmax_forward(x, y, dim, log);
        },
        py::arg("x"), py::arg("y"), py::arg("dim"), py::arg("log"), py::call_guard<py::gil_scoped_release>(),
        "y = softmax(x, dim) (log_softmax if log) into the preallocated y; x, y contiguous.");
  m.def("softmax_backward",
        [](const fl::View& grad_y, const fl::View& y, const fl::View& grad_x, int64_t dim, bool log) {
          require_cuda_build(y, "softmax_backward");
#if defined(FASTLEARN_WITH_CUDA)
          if (y.device == fl::Device::cuda) return fl::cuda::softmax_backward(grad_y, y, grad_x, dim, log);
#endif
          rep::softmax_backward(grad_y, y, grad_x, dim, log);
        },
        py::arg("grad_y"), py::arg("y"), py::arg("grad_x"), py::arg("dim"), py::arg("log"),
        py::call_guard<py::gil_scoped_release>(), "grad_x from grad_y and the forward output y.");
  m.def("one_hot",
        [](const fl::View& labels, const fl::View& out, int64_t num_classes) {
          require_cuda_build(labels, "one_hot");
#if defined(FASTLEARN_WITH_CUDA)
          if (labels.device == fl::Device::cuda) return fl::cuda::one_hot(labels, out, num_classes);
#endif
          rep::one_hot(labels, out, num_classes);
        },
        py::arg("labels"), py::arg("out"), py::arg("num_classes"), py::call_guard<py::gil_scoped_release>(),
        "out[..., k] = (labels == k) as int64; raises ValueError for labels outside [0, num_classes).");
}

// Bindings of the attention domain: the CPU flash-attention forward and backward. GPU tensors
// go through the Triton kernels (python/fastlearn/ops/attention.py), never through here.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>

#include "../attention/attention.h"
#include "registry.h"

namespace py = pybind11;
namespace att = fl::attention;

namespace {

att::Options make_options(double scale, bool causal, double dropout_p, uint64_t seed) {
  att::Options o;
  o.scale = scale;
  o.causal = causal;
  o.dropout_p = dropout_p;
  o.seed = seed;
  return o;
}

}  // namespace

FL_BINDINGS(attention) {
  m.def("attention_forward",
        [](const fl::View& q, const fl::View& k, const fl::View& v, std::optional<fl::View> bias, const fl::View& out,
           const fl::View& lse, double scale, bool causal, double dropout_p, uint64_t seed) {
          att::forward(q, k, v, bias ? &*bias : nullptr, out, lse, make_options(scale, causal, dropout_p, seed));
        },
        py::arg("query"), py::arg("key"), py::arg("value"), py::arg("bias"), py::arg("out"), py::arg("lse"),
        py::arg("scale"), py::arg("causal"), py::arg("dropout_p"), py::arg("seed"),
        py::call_guard<py::gil_scoped_release>(),
        "Flash-attention forward on the CPU into out (B, Hq, L, Ev) and lse (B, Hq, L); float32/float64.");
  m.def("attention_backward",
        [](const fl::View& grad_out, const fl::View& q, const fl::View& k, const fl::View& v,
           std::optional<fl::View> bias, const fl::View& out, const fl::View& lse, const fl::View& grad_q,
           const fl::View& grad_k, const fl::View& grad_v, double scale, bool causal, double dropout_p, uint64_t seed) {
          att::backward(grad_out, q, k, v, bias ? &*bias : nullptr, out, lse, grad_q, grad_k, grad_v,
                        make_options(scale, causal, dropout_p, seed));
        },
        py::arg("grad_out"), py::arg("query"), py::arg("key"), py::arg("value"), py::arg("bias"), py::arg("out"),
        py::arg("lse"), py::arg("grad_query"), py::arg("grad_key"), py::arg("grad_value"), py::arg("scale"),
        py::arg("causal"), py::arg("dropout_p"), py::arg("seed"), py::call_guard<py::gil_scoped_release>(),
        "Flash-attention backward on the CPU (recomputes the probabilities from lse).");
  m.def("attention_dropout_keep", &att::dropout_keep, py::arg("seed"), py::arg("bh"), py::arg("row"), py::arg("col"),
        py::arg("p"), "Whether the dropout mask keeps one attention weight (for tests).");
}

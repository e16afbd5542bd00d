// Bindings of the diffusion domain: the fused sampler step and its counter-based noise (CPU;
// the GPU kernels are Triton, kernels/triton/diffusion_step.py), and raw Philox for tests.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <tuple>

#include "../diffusion/diffusion_step.h"
#include "fastlearn/philox.h"
#include "registry.h"

namespace py = pybind11;
namespace dif = fl::diffusion;

namespace {

void require_cpu(const fl::View& v, const char* op) {
  FL_CHECK_RUNTIME(v.device == fl::Device::cpu, op, ": argument '", v.name,
                   "' is on a GPU; the GPU path of this op is the Triton kernel (pip install triton), reached "
                   "through fastlearn.ops.", op, ".");
}

const fl::View* opt(const std::optional<fl::View>& v) { return v ? &*v : nullptr; }

}  // namespace

FL_BINDINGS(diffusion) {
  m.def("diffusion_step",
        [](const fl::View& x, const fl::View& model_output, std::optional<fl::View> uncond, const fl::View& coeffs,
           std::optional<fl::View> step_tensor, int64_t step, double guidance_scale, double guidance_rescale,
           double clip, std::optional<fl::View> seed_tensor, int64_t seed, int64_t offset, const fl::View& prev,
           const fl::View& x0) {
          require_cpu(x, "diffusion_step");
          dif::diffusion_step(x, model_output, opt(uncond), coeffs, opt(step_tensor), step, guidance_scale,
                              guidance_rescale, clip, opt(seed_tensor), seed, offset, prev, x0);
        },
        py::arg("x"), py::arg("model_output"), py::arg("uncond"), py::arg("coeffs"), py::arg("step_tensor"),
        py::arg("step"), py::arg("guidance_scale"), py::arg("guidance_rescale"), py::arg("clip"),
        py::arg("seed_tensor"), py::arg("seed"), py::arg("offset"), py::arg("prev"), py::arg("x0"),
        py::call_guard<py::gil_scoped_release>(),
        "Fused sampler step into the preallocated prev and x0 (all contiguous, CPU); clip = inf for none.");
  m.def("philox_normal",
        [](const fl::View& out, std::optional<fl::View> seed_tensor, int64_t seed, int64_t offset) {
          require_cpu(out, "philox_normal");
          dif::philox_normal(out, opt(seed_tensor), seed, offset);
        },
        py::arg("out"), py::arg("seed_tensor"), py::arg("seed"), py::arg("offset"),
        py::call_guard<py::gil_scoped_release>(), "out[i] = N(seed, offset + i), the noise of diffusion_step.");
  m.def("philox4x32_10",
        [](uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
          fl::philox4x32_10(c0, c1, c2, c3, k0, k1);
          return std::make_tuple(c0, c1, c2, c3);
        },
        py::arg("c0"), py::arg("c1"), py::arg("c2"), py::arg("c3"), py::arg("k0"), py::arg("k1"),
        "Philox4x32-10 of one counter under one key (for tests against known-answer vectors).");
}

// The fastlearn._C module: the View type of the buffer boundary, error translation, build
// information and thread control; each domain's bindings register themselves (registry.h).
#include <omp.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>

#include "fastlearn/common.h"
#include "fastlearn/memory.h"
#include "fastlearn/simd.h"
#include "fastlearn/view.h"
#include "registry.h"

#ifndef FASTLEARN_CUDA_ARCHS
#define FASTLEARN_CUDA_ARCHS ""
#endif
#ifndef FASTLEARN_CUDA_VERSION
#define FASTLEARN_CUDA_VERSION ""
#endif

namespace py = pybind11;

namespace fl::bindings {
std::vector<std::pair<const char*, Binder>>& registry() {
  static std::vector<std::pair<const char*, Binder>> binders;
  return binders;
}

#if defined(FASTLEARN_WITH_CUDA)
int cuda_device_count();  // kernels/cuda/core/device.cu
#endif
}  // namespace fl::bindings

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastlearn's compiled kernels (C++ CPU, CUDA GPU). Internal: use fastlearn.ops and the estimators.";

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const fl::type_error& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    } catch (const fl::runtime_error& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
    }
  });

  py::class_<fl::View>(m, "View", "A plain view of a buffer: pointer, dtype, shape, strides (elements), device.")
      .def(py::init([](uintptr_t data, int dtype, std::vector<int64_t> shape, std::vector<int64_t> strides,
                       int device, int device_index, intptr_t stream, std::string name) {
             FL_CHECK(shape.size() == strides.size(), "View: shape and strides differ in length");
             FL_CHECK(dtype >= 0 && dtype <= 9, "View: unknown dtype code ", dtype);
             FL_CHECK(device == 0 || device == 1, "View: unknown device code ", device);
             fl::View v;
             v.data = reinterpret_cast<void*>(data);
             v.dtype = static_cast<fl::DType>(dtype);
             v.shape = std::move(shape);
             v.strides = std::move(strides);
             v.device = static_cast<fl::Device>(device);
             v.device_index = device_index;
             v.stream = stream;
             v.name = std::move(name);
             return v;
           }),
           py::arg("data"), py::arg("dtype"), py::arg("shape"), py::arg("strides"), py::arg("device"),
           py::arg("device_index"), py::arg("stream"), py::arg("name"))
      .def_property_readonly("shape", [](const fl::View& v) { return v.shape; })
      .def_property_readonly("strides", [](const fl::View& v) { return v.strides; })
      .def_property_readonly("dtype", [](const fl::View& v) { return fl::dtype_name(v.dtype); })
      .def_property_readonly("name", [](const fl::View& v) { return v.name; })
      .def_property_readonly("is_contiguous", &fl::View::is_contiguous)
      .def("__repr__", [](const fl::View& v) {
        std::string s = "View(" + v.name + ", " + fl::dtype_name(v.dtype) + ", shape=(";
        for (auto d : v.shape) s += std::to_string(d) + ",";
        return s + "))";
      });

  m.def("build_info", [] {
    py::dict d;
    d["version"] = FASTLEARN_VERSION;
    d["compiler"] = FASTLEARN_COMPILER;
#if defined(FASTLEARN_WITH_CUDA)
    d["cuda_built"] = true;
#else
    d["cuda_built"] = false;
#endif
    d["cuda_archs"] = FASTLEARN_CUDA_ARCHS;
    d["cuda_version"] = FASTLEARN_CUDA_VERSION;
#if defined(FASTLEARN_NATIVE_BUILD)
    d["cpu_build"] = "native (-march=native)";
#else
    d["cpu_build"] = "portable (x86-64 baseline with AVX2 and AVX-512 clones)";
#endif
    d["cpu_simd"] = fl::cpu_simd_level();
    d["openmp"] = _OPENMP;
    return d;
  });
  m.def("cuda_device_count", [] {
#if defined(FASTLEARN_WITH_CUDA)
    return fl::bindings::cuda_device_count();
#else
    return 0;
#endif
  }, "GPUs the CUDA runtime in _C sees (0 when built without CUDA or when no driver is present).");
  m.def("set_num_threads", [](int n) {
    FL_CHECK(n >= 1, "set_num_threads: argument 'n' must be >= 1, got ", n, ".");
    omp_set_num_threads(n);
  }, py::arg("n"));
  m.def("get_num_threads", [] { return omp_get_max_threads(); });
  m.def("advise_huge_pages", [](uintptr_t data, size_t bytes) { return fl::advise_huge_pages(data, bytes); },
        py::arg("data"), py::arg("bytes"),
        "Ask for transparent huge pages on a fresh CPU buffer before its first write (Linux); "
        "returns whether the advice was taken.");

  for (auto& [name, binder] : fl::bindings::registry()) {
    (void)name;
    binder(m);
  }
}

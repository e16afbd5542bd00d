// Each csrc/bindings/<domain>.cpp adds its functions to fastlearn._C through
// FL_BINDINGS(domain) { ... }, so module.cpp never changes when a domain is added.
#pragma once

#include <pybind11/pybind11.h>

#include <utility>
#include <vector>

namespace fl::bindings {

using Binder = void (*)(pybind11::module_&);
std::vector<std::pair<const char*, Binder>>& registry();
inline int add(const char* name, Binder binder) {
  registry().emplace_back(name, binder);
  return 0;
}

}  // namespace fl::bindings

#define FL_BINDINGS(domain)                                                                   \
  static void fl_bind_##domain(pybind11::module_& m);                                         \
  [[maybe_unused]] static const int fl_bind_registered_##domain =                             \
      ::fl::bindings::add(#domain, &fl_bind_##domain);                                         \
  static void fl_bind_##domain(pybind11::module_& m)

// spattn._C: the bindings. Each area has its own file with a bind_* function.

#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>

#include "spattn/spattn.hpp"

namespace nb = nanobind;

namespace spattn::python {
void bind_pattern(nb::module_& module);
void bind_layouts(nb::module_& module);
void bind_neighborhood(nb::module_& module);
void bind_cpu_kernels(nb::module_& module);
void bind_cpu_attention(nb::module_& module);
void bind_cuda_kernels(nb::module_& module);
void bind_cuda_attention(nb::module_& module);
void bind_plan(nb::module_& module);
}  // namespace spattn::python

NB_MODULE(_C, module) {
  module.doc() = "spattn core: CSR patterns and sparse attention kernels";

  // The one place where C++ errors become Python exceptions: spattn::Error -> ValueError.
  nb::register_exception_translator([](const std::exception_ptr& error, void*) {
    try {
      std::rethrow_exception(error);
    } catch (const spattn::Error& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });

  // The version written in CMakeLists.txt's project(); spattn.__version__ reads it from here.
  module.attr("__version__") = spattn::build_info().version;

  module.def("build_info", [] {
    const spattn::BuildInfo info = spattn::build_info();
    nb::dict result;
    result["version"] = info.version;
    result["cuda"] = info.cuda;
    result["cuda_archs"] = info.cuda_archs;
    result["cuda_version"] = info.cuda_version;
    result["cusparse"] = info.cusparse;
    // cuSPARSE is loaded on first use (this call loads it): whether it can be here, and if not, why.
    const std::string cusparse_load_error = spattn::cuda::cusparse_load_error();
    result["cusparse_loadable"] = cusparse_load_error.empty();
    result["cusparse_load_error"] = cusparse_load_error;
    result["cusparse_version"] = spattn::cuda::cusparse_version();
    result["openmp"] = info.openmp;
    result["compiler"] = info.compiler;
    return result;
  });
  module.def("cuda_device_count", &spattn::cuda::device_count);
  module.def("cuda_device_name", &spattn::cuda::device_name);

  spattn::python::bind_pattern(module);
  spattn::python::bind_layouts(module);
  spattn::python::bind_neighborhood(module);
  spattn::python::bind_cpu_kernels(module);
  spattn::python::bind_cpu_attention(module);
  spattn::python::bind_cuda_kernels(module);
  spattn::python::bind_cuda_attention(module);
  spattn::python::bind_plan(module);
}

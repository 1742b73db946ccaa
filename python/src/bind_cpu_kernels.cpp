// Bindings of the CPU kernels.

#include "arrays.hpp"

namespace spattn::python {

void bind_cpu_kernels(nb::module_&) {}

}  // namespace spattn::python

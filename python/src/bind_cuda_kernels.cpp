// Bindings of the CUDA kernels.

#include "arrays.hpp"

namespace spattn::python {

void bind_cuda_kernels(nb::module_&) {}

}  // namespace spattn::python

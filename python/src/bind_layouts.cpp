// Bindings of the block layouts of the sparse transformers.

#include "arrays.hpp"
#include "spattn/spattn.hpp"

namespace spattn::python {

void bind_layouts(nb::module_&) {}

}  // namespace spattn::python

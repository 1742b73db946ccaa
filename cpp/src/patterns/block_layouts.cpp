// Block layouts of the sparse transformers.

#include "spattn/block_layouts.hpp"
#include "spattn/error.hpp"

namespace spattn::layouts {}  // namespace spattn::layouts

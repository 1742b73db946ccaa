#pragma once
// Block layouts of the sparse transformers (Sparse Transformer "fixed", "variable", BigBird,
// Longformer-style): which key blocks each query block attends to. Expand with
// patterns::from_block_layout.

#include <cstdint>
#include <vector>

#include "spattn/csr.hpp"

namespace spattn::layouts {

// A row-major block_rows x block_cols matrix of 0/1 bytes.
struct BlockLayout {
  index_t block_rows = 0;
  index_t block_cols = 0;
  std::vector<std::uint8_t> blocks;
};

}  // namespace spattn::layouts

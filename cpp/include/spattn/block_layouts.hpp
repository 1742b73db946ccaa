#pragma once
// Block layouts of the sparse transformers (Sparse Transformer "fixed", "variable", BigBird,
// Longformer-style): which key blocks each query block attends to. Expand with
// patterns::from_block_layout.
//
// Each generator reproduces one head of DeepSpeed's / xformers' SparsityConfig.make_layout (the
// FixedSparsityConfig, VariableSparsityConfig, BigBirdSparsityConfig and BSLongformerSparsityConfig
// classes) for num_blocks = seq_len / block_size blocks, with the same argument names and defaults.
// Random blocks come from `seed` instead of Python's global random state, so the same seed gives the
// same layout on every platform.

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "spattn/csr.hpp"

namespace spattn::layouts {

// A row-major block_rows x block_cols matrix of 0/1 bytes.
struct BlockLayout {
  index_t block_rows = 0;
  index_t block_cols = 0;
  std::vector<std::uint8_t> blocks;

  bool at(index_t row, index_t col) const { return blocks[row * block_cols + col] != 0; }
};

// "bidirectional": blocks attend both ways (BERT); "unidirectional": the causal variant (GPT).
enum class Attention { bidirectional, unidirectional };

// Parses "bidirectional" / "unidirectional"; throws an Error naming `attention` for anything else.
Attention parse_attention(std::string_view name);

// FixedSparsityConfig (Sparse Transformer's "fixed" pattern). Blocks are cut into local windows of
// num_local_blocks; each window attends to itself (causally when unidirectional). Each window's global
// blocks are its (1 + head % num_different_global_patterns)-th group of num_global_blocks blocks counted
// from the window's end: every block row attends to them (rows from the first global block on when
// unidirectional), and with horizontal_global_attention they attend to every block. A short last window
// gets its global blocks at the same offset from its start, pulled back so that they fit.
BlockLayout fixed(index_t num_blocks, index_t num_local_blocks = 4, index_t num_global_blocks = 1,
                  Attention attention = Attention::bidirectional, bool horizontal_global_attention = false,
                  index_t num_different_global_patterns = 1, index_t head = 0);

// VariableSparsityConfig. Each block row attends to num_random_blocks distinct random blocks (drawn from
// all blocks, whatever the attention), to its local window (windows of local_window_blocks[0],
// local_window_blocks[1], ... blocks, the last size repeating to the end; causal when unidirectional),
// and to the global blocks: global_block_indices, or the ranges [global_block_indices[i],
// global_block_end_indices[i]) when end indices are given (rows from the global block on when
// unidirectional; with horizontal_global_attention the global blocks also attend to every block).
// Global blocks past the end are ignored.
BlockLayout variable(index_t num_blocks, index_t num_random_blocks = 0,
                     const std::vector<index_t>& local_window_blocks = {4},
                     const std::vector<index_t>& global_block_indices = {0},
                     const std::optional<std::vector<index_t>>& global_block_end_indices = std::nullopt,
                     Attention attention = Attention::bidirectional, bool horizontal_global_attention = false,
                     std::uint64_t seed = 0);

// BigBirdSparsityConfig. Each block row attends to num_random_blocks distinct random blocks, to the
// sliding window |row - col| <= num_sliding_window_blocks / 2, and the first num_global_blocks blocks
// attend to and are attended by every block. Unidirectional keeps only the lower triangle (col <= row) of
// all of it, and draws row r's random blocks from [0, r].
BlockLayout bigbird(index_t num_blocks, index_t num_random_blocks = 1, index_t num_sliding_window_blocks = 3,
                    index_t num_global_blocks = 1, Attention attention = Attention::bidirectional,
                    std::uint64_t seed = 0);

// BSLongformerSparsityConfig (block-sparse Longformer). The sliding window of BigBird plus global blocks
// (global_block_indices, or the ranges [global_block_indices[i], global_block_end_indices[i])) that
// attend to and are attended by every block. Unidirectional keeps only the lower triangle.
BlockLayout longformer(index_t num_blocks, index_t num_sliding_window_blocks = 3,
                       const std::vector<index_t>& global_block_indices = {0},
                       const std::optional<std::vector<index_t>>& global_block_end_indices = std::nullopt,
                       Attention attention = Attention::bidirectional);

}  // namespace spattn::layouts

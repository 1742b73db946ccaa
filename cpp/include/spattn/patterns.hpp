#pragma once
// Pattern generators. Each writes CSR directly, in time and memory proportional to the number of
// entries (never an N x N mask), and validates its arguments with a spattn::Error naming the argument.
// 2-D patterns index the grid token (i, j) of an H x W grid as i * W + j.

#include <cstdint>

#include "spattn/csr.hpp"

namespace spattn::patterns {

// Swin Transformer's (shifted) window attention on an H x W grid. In un-rolled order each axis splits
// into groups [0, shift), [shift, shift + window), [shift + window, shift + 2 * window), ... (border groups
// partial, no wrap-around); a token attends to exactly the tokens in the same group on both axes. This is
// what Swin's roll(-shift) + window partition + region mask computes. Requires 1 <= window <= grid size
// and 0 <= shift < window on each axis.
Csr swin(index_t height, index_t width, index_t window_height, index_t window_width, index_t shift_height,
         index_t shift_width);
inline Csr swin(index_t height, index_t width, index_t window_size, index_t shift_size = 0) {
  return swin(height, width, window_size, window_size, shift_size, shift_size);
}

// 1-D local attention: |i - j| <= window_size / 2 (window_size counts the token and both wings).
Csr local_1d(index_t n, index_t window_size);
// Causal attention: j <= i.
Csr causal_1d(index_t n);
// 2-D local attention: the p-norm distance between grid positions is < distance. p = 0 counts the
// differing coordinates, p = infinity takes the largest difference.
Csr local_2d(index_t height, index_t width, double distance, double p = 2.0);
// Axial attention: same grid row or same grid column.
Csr axial_2d(index_t height, index_t width);
// Dilated attention: both coordinate differences are multiples of k.
Csr dilated_2d(index_t height, index_t width, index_t k = 2);
// Global tokens: entry (i, j) exists when flags[i] or flags[j]; flags has n bytes.
Csr global_tokens(const std::uint8_t* flags, index_t n);
// Each entry independently with probability density; the same seed gives the same pattern.
Csr random(index_t rows, index_t cols, double density, std::uint64_t seed = 0);
// Group attention: entry (r, c) exists when row_labels[r] == col_labels[c] and the label is >= 0 (a
// negative label attends to nothing). Swin windows with padding, clustered or bucketed attention.
Csr from_groups(const index_t* row_labels, index_t rows, const index_t* col_labels, index_t cols);
// Expands a row-major block_rows x block_cols 0/1 layout into blocks of block_size x block_size.
Csr from_block_layout(const std::uint8_t* layout, index_t block_rows, index_t block_cols, index_t block_size);

}  // namespace spattn::patterns

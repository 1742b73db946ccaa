// Global tokens, random patterns, groups and block layouts.

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "pattern_builder.hpp"
#include "spattn/error.hpp"
#include "spattn/patterns.hpp"

namespace spattn::patterns {

Csr global_tokens(const std::uint8_t* flags, index_t n) {
  SPATTN_CHECK(n >= 0, "flags must have >= 0 entries, got ", n);
  std::vector<index_t> global_columns;
  for (index_t col = 0; col < n; ++col) {
    if (flags[col]) global_columns.push_back(col);
  }
  const index_t globals = static_cast<index_t>(global_columns.size());
  return detail::build_by_rows(
      n, n, "global_tokens pattern", [&](index_t row) { return flags[row] ? n : globals; },
      [&](index_t row, index_t* out) {
        if (flags[row]) {
          for (index_t col = 0; col < n; ++col) *out++ = col;
        } else {
          for (index_t col : global_columns) *out++ = col;
        }
      });
}

namespace {

Csr random_unchecked(index_t rows, index_t cols, index_t total, double density, std::uint64_t seed) {
  std::vector<index_t> row_offsets(rows + 1, 0);
  std::vector<index_t> col_indices;
  col_indices.reserve(static_cast<std::size_t>(density * static_cast<double>(total) * 1.05) + 16);
  // Skip from entry to entry with geometric gaps: O(nnz) work, one sequential stream per seed.
  std::mt19937_64 engine(seed);
  if (density > 0.0 && total > 0) {
    index_t position = -1;
    if (density >= 1.0) {
      for (index_t p = 0; p < total; ++p) col_indices.push_back(p);
    } else {
      std::geometric_distribution<index_t> gap(density);
      while (true) {
        const index_t skip = gap(engine);
        if (skip >= total - 1 - position) break;
        position += skip + 1;
        col_indices.push_back(position);
      }
    }
    // Turn flat positions into (row, col): positions are increasing, so rows fill in order.
    for (auto& p : col_indices) {
      ++row_offsets[p / cols + 1];
      p %= cols;
    }
    for (index_t row = 0; row < rows; ++row) row_offsets[row + 1] += row_offsets[row];
  }
  return Csr::trusted(rows, cols, std::move(row_offsets), std::move(col_indices));
}

}  // namespace

Csr random(index_t rows, index_t cols, double density, std::uint64_t seed) {
  SPATTN_CHECK(rows >= 0, "n_rows must be >= 0, got ", rows);
  SPATTN_CHECK(cols >= 0, "n_cols must be >= 0, got ", cols);
  SPATTN_CHECK(density >= 0.0 && density <= 1.0, "density must be in [0, 1], got ", density);
  const index_t total = checked_mul(rows, cols, "random pattern");
  check_nnz_limit(static_cast<index_t>(std::ceil(density * static_cast<double>(total))), "random pattern");
  // Under the nnz limit the arrays may still not fit in memory: refuse with a message, not std::bad_alloc.
  try {
    return random_unchecked(rows, cols, total, density, seed);
  } catch (const std::bad_alloc&) {
    detail::throw_error("random pattern of ", rows, " x ", cols, " at density ", density,
                        " is too large: its arrays cannot be allocated");
  } catch (const std::length_error&) {
    detail::throw_error("random pattern of ", rows, " x ", cols, " at density ", density,
                        " is too large: its arrays cannot be allocated");
  }
}

Csr from_groups(const index_t* row_labels, index_t rows, const index_t* col_labels, index_t cols) {
  SPATTN_CHECK(rows >= 0 && cols >= 0, "row_labels/col_labels must have >= 0 entries");
  // Columns sorted by (label, column): each label's members form one sorted run that rows copy.
  std::vector<index_t> members(cols);
  std::iota(members.begin(), members.end(), index_t{0});
  std::stable_sort(members.begin(), members.end(),
                   [&](index_t a, index_t b) { return col_labels[a] < col_labels[b]; });
  auto run_of = [&](index_t label) {
    if (label < 0) return std::pair<index_t, index_t>{0, 0};
    const auto begin = std::lower_bound(members.begin(), members.end(), label,
                                        [&](index_t member, index_t value) { return col_labels[member] < value; });
    const auto end = std::upper_bound(begin, members.end(), label,
                                      [&](index_t value, index_t member) { return value < col_labels[member]; });
    return std::pair<index_t, index_t>{begin - members.begin(), end - members.begin()};
  };
  return detail::build_by_rows(
      rows, cols, "groups pattern",
      [&](index_t row) {
        const auto [begin, end] = run_of(row_labels[row]);
        return end - begin;
      },
      [&](index_t row, index_t* out) {
        const auto [begin, end] = run_of(row_labels[row]);
        std::copy(members.begin() + begin, members.begin() + end, out);
      });
}

Csr from_block_layout(const std::uint8_t* layout, index_t block_rows, index_t block_cols, index_t block_size) {
  SPATTN_CHECK(block_rows >= 0 && block_cols >= 0, "layout must have a non-negative shape, got (", block_rows,
               ", ", block_cols, ")");
  SPATTN_CHECK(block_size >= 1, "block_size must be >= 1, got ", block_size);
  const index_t rows = checked_mul(block_rows, block_size, "block layout pattern");
  const index_t cols = checked_mul(block_cols, block_size, "block layout pattern");
  std::vector<index_t> blocks_per_row(block_rows, 0);
  for (index_t r = 0; r < block_rows; ++r) {
    for (index_t c = 0; c < block_cols; ++c) blocks_per_row[r] += layout[r * block_cols + c] != 0;
  }
  return detail::build_by_rows(
      rows, cols, "block layout pattern",
      [&](index_t row) { return blocks_per_row[row / block_size] * block_size; },
      [&](index_t row, index_t* out) {
        const std::uint8_t* layout_row = layout + (row / block_size) * block_cols;
        for (index_t c = 0; c < block_cols; ++c) {
          if (!layout_row[c]) continue;
          for (index_t col = c * block_size; col < (c + 1) * block_size; ++col) *out++ = col;
        }
      });
}

}  // namespace spattn::patterns

#pragma once
// Shared machinery of the generators: count each row's entries, prefix-sum them into offsets, then
// fill every row independently. Both passes run in parallel over rows.

#include <cstdint>
#include <new>
#include <stdexcept>
#include <vector>

#include "spattn/checked_math.hpp"
#include "spattn/csr.hpp"

namespace spattn::detail {

template <typename CountRow, typename FillRow>
Csr build_by_rows_unchecked(index_t rows, index_t cols, const char* what, CountRow count, FillRow fill) {
  std::vector<index_t> row_offsets(rows + 1, 0);
#pragma omp parallel for schedule(static) if (rows > 4096)
  for (index_t row = 0; row < rows; ++row) row_offsets[row + 1] = count(row);
  for (index_t row = 0; row < rows; ++row) {
    row_offsets[row + 1] = checked_add(row_offsets[row], row_offsets[row + 1], what);
  }
  check_nnz_limit(row_offsets[rows], what);
  std::vector<index_t> col_indices(row_offsets[rows]);
#pragma omp parallel for schedule(static) if (rows > 4096)
  for (index_t row = 0; row < rows; ++row) fill(row, col_indices.data() + row_offsets[row]);
  return Csr::trusted(rows, cols, std::move(row_offsets), std::move(col_indices));
}

// count(row) -> number of entries; fill(row, index_t* out) writes them, sorted. Refuses sizes past the
// limits and turns a failed allocation into an error naming the pattern.
template <typename CountRow, typename FillRow>
Csr build_by_rows(index_t rows, index_t cols, const char* what, CountRow count, FillRow fill) {
  check_size_limit(rows, what, "rows");
  check_size_limit(cols, what, "columns");
  try {
    return build_by_rows_unchecked(rows, cols, what, count, fill);
  } catch (const std::bad_alloc&) {
    detail::throw_error(what, " with ", rows, " rows is too large: its arrays cannot be allocated");
  } catch (const std::length_error&) {
    detail::throw_error(what, " with ", rows, " rows is too large: its arrays cannot be allocated");
  }
}

}  // namespace spattn::detail

// Derived patterns: transpose (with its permutation), union, intersection, row order by length.

#include <algorithm>
#include <numeric>

#include "spattn/csr.hpp"
#include "spattn/error.hpp"

namespace spattn {

Transposed transpose(CsrView pattern) {
  const index_t nnz = pattern.nnz();
  std::vector<index_t> offsets(pattern.cols + 1, 0);
  for (index_t k = 0; k < nnz; ++k) ++offsets[pattern.col_indices[k] + 1];
  std::partial_sum(offsets.begin(), offsets.end(), offsets.begin());

  // Walking rows in increasing order keeps every transposed row sorted without a sort.
  std::vector<index_t> next(offsets.begin(), offsets.end() - 1);
  std::vector<index_t> columns(nnz);
  std::vector<index_t> permutation(nnz);
  for (index_t row = 0; row < pattern.rows; ++row) {
    for (index_t k = pattern.row_offsets[row]; k < pattern.row_offsets[row + 1]; ++k) {
      const index_t slot = next[pattern.col_indices[k]]++;
      columns[slot] = row;
      permutation[slot] = k;
    }
  }
  return {Csr::trusted(pattern.cols, pattern.rows, std::move(offsets), std::move(columns)), std::move(permutation)};
}

namespace {

enum class SetOperation { union_of, intersection_of };

// Merges two sorted column lists per row; counts first so the result is allocated once.
Csr merge_rows(CsrView a, CsrView b, SetOperation operation) {
  SPATTN_CHECK(a.rows == b.rows && a.cols == b.cols, "other: patterns must have the same shape, got (", a.rows,
               ", ", a.cols, ") and (", b.rows, ", ", b.cols, ")");
  auto merge = [&](index_t row, index_t* out) {
    index_t i = a.row_offsets[row], i_end = a.row_offsets[row + 1];
    index_t j = b.row_offsets[row], j_end = b.row_offsets[row + 1];
    index_t count = 0;
    while (i < i_end && j < j_end) {
      const index_t col_a = a.col_indices[i], col_b = b.col_indices[j];
      if (col_a == col_b) {
        if (out) out[count] = col_a;
        ++count, ++i, ++j;
      } else if (col_a < col_b) {
        if (operation == SetOperation::union_of) {
          if (out) out[count] = col_a;
          ++count;
        }
        ++i;
      } else {
        if (operation == SetOperation::union_of) {
          if (out) out[count] = col_b;
          ++count;
        }
        ++j;
      }
    }
    if (operation == SetOperation::union_of) {
      for (; i < i_end; ++i, ++count) if (out) out[count] = a.col_indices[i];
      for (; j < j_end; ++j, ++count) if (out) out[count] = b.col_indices[j];
    }
    return count;
  };
  std::vector<index_t> offsets(a.rows + 1, 0);
  for (index_t row = 0; row < a.rows; ++row) offsets[row + 1] = offsets[row] + merge(row, nullptr);
  std::vector<index_t> columns(offsets[a.rows]);
  for (index_t row = 0; row < a.rows; ++row) merge(row, columns.data() + offsets[row]);
  return Csr::trusted(a.rows, a.cols, std::move(offsets), std::move(columns));
}

}  // namespace

Csr union_of(CsrView a, CsrView b) { return merge_rows(a, b, SetOperation::union_of); }
Csr intersection_of(CsrView a, CsrView b) { return merge_rows(a, b, SetOperation::intersection_of); }

std::vector<index_t> rows_by_length(CsrView pattern) {
  std::vector<index_t> order(pattern.rows);
  std::iota(order.begin(), order.end(), index_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](index_t x, index_t y) { return pattern.row_length(x) > pattern.row_length(y); });
  return order;
}

}  // namespace spattn

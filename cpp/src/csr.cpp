// Construction and validation of owning CSR patterns.

#include <algorithm>
#include <new>
#include <numeric>

#include "spattn/checked_math.hpp"
#include "spattn/csr.hpp"
#include "spattn/error.hpp"

namespace spattn {

void validate(CsrView pattern, index_t row_offsets_size, index_t col_indices_size, const char* name) {
  SPATTN_CHECK(pattern.rows >= 0, name, ": number of rows must be >= 0, got ", pattern.rows);
  SPATTN_CHECK(pattern.cols >= 0, name, ": number of columns must be >= 0, got ", pattern.cols);
  SPATTN_CHECK(row_offsets_size == pattern.rows + 1, name, ": row_offsets must have rows + 1 = ",
               pattern.rows + 1, " entries, got ", row_offsets_size);
  SPATTN_CHECK(pattern.row_offsets[0] == 0, name, ": row_offsets[0] must be 0, got ", pattern.row_offsets[0]);
  for (index_t row = 0; row < pattern.rows; ++row) {
    SPATTN_CHECK(pattern.row_offsets[row + 1] >= pattern.row_offsets[row], name,
                 ": row_offsets must be non-decreasing, but row_offsets[", row + 1, "] = ",
                 pattern.row_offsets[row + 1], " < row_offsets[", row, "] = ", pattern.row_offsets[row]);
  }
  SPATTN_CHECK(pattern.row_offsets[pattern.rows] == col_indices_size, name,
               ": the last row offset must equal the number of column indices (", col_indices_size, "), got ",
               pattern.row_offsets[pattern.rows]);
  for (index_t row = 0; row < pattern.rows; ++row) {
    const index_t begin = pattern.row_offsets[row];
    const index_t end = pattern.row_offsets[row + 1];
    for (index_t k = begin; k < end; ++k) {
      const index_t col = pattern.col_indices[k];
      SPATTN_CHECK(col >= 0 && col < pattern.cols, name, ": col_indices[", k, "] = ", col, " in row ", row,
                   " is out of range [0, ", pattern.cols, ")");
      SPATTN_CHECK(k == begin || pattern.col_indices[k - 1] < col, name,
                   ": col_indices must be sorted and unique within each row, but row ", row, " has ",
                   pattern.col_indices[k - 1], " before ", col);
    }
  }
}

Csr::Csr(index_t rows, index_t cols, std::vector<index_t> row_offsets, std::vector<index_t> col_indices)
    : rows_(rows), cols_(cols), row_offsets_(std::move(row_offsets)), col_indices_(std::move(col_indices)) {
  SPATTN_CHECK(rows_ >= 0, "pattern: number of rows must be >= 0, got ", rows_);
  SPATTN_CHECK(!row_offsets_.empty(), "pattern: row_offsets must have rows + 1 = ", rows_ + 1,
               " entries, got 0");
  validate(view(), static_cast<index_t>(row_offsets_.size()), static_cast<index_t>(col_indices_.size()));
}

Csr Csr::trusted(index_t rows, index_t cols, std::vector<index_t> row_offsets, std::vector<index_t> col_indices) {
  Csr result;
  result.rows_ = rows;
  result.cols_ = cols;
  result.row_offsets_ = std::move(row_offsets);
  result.col_indices_ = std::move(col_indices);
  return result;
}

Csr Csr::from_dense(const std::uint8_t* mask, index_t rows, index_t cols) {
  SPATTN_CHECK(rows >= 0, "mask: number of rows must be >= 0, got ", rows);
  SPATTN_CHECK(cols >= 0, "mask: number of columns must be >= 0, got ", cols);
  checked_mul(rows, cols, "mask");
  std::vector<index_t> row_offsets(rows + 1, 0);
  for (index_t row = 0; row < rows; ++row) {
    const std::uint8_t* mask_row = mask + row * cols;
    index_t count = 0;
    for (index_t col = 0; col < cols; ++col) count += mask_row[col] != 0;
    row_offsets[row + 1] = row_offsets[row] + count;
  }
  std::vector<index_t> col_indices(row_offsets[rows]);
  for (index_t row = 0; row < rows; ++row) {
    const std::uint8_t* mask_row = mask + row * cols;
    index_t out = row_offsets[row];
    for (index_t col = 0; col < cols; ++col) {
      if (mask_row[col] != 0) col_indices[out++] = col;
    }
  }
  return trusted(rows, cols, std::move(row_offsets), std::move(col_indices));
}

Csr Csr::from_coo(index_t rows, index_t cols, const index_t* row_indices, const index_t* col_indices,
                  index_t count) {
  SPATTN_CHECK(rows >= 0, "shape: number of rows must be >= 0, got ", rows);
  SPATTN_CHECK(cols >= 0, "shape: number of columns must be >= 0, got ", cols);
  SPATTN_CHECK(count >= 0, "rows/cols: number of entries must be >= 0, got ", count);
  check_size_limit(rows, "shape", "rows");
  check_size_limit(cols, "shape", "columns");
  try {
    return from_coo_unchecked(rows, cols, row_indices, col_indices, count);
  } catch (const std::bad_alloc&) {
    detail::throw_error("shape: a pattern with ", rows, " rows is too large: its arrays cannot be allocated");
  }
}

Csr Csr::from_coo_unchecked(index_t rows, index_t cols, const index_t* row_indices, const index_t* col_indices,
                            index_t count) {
  for (index_t k = 0; k < count; ++k) {
    SPATTN_CHECK(row_indices[k] >= 0 && row_indices[k] < rows, "rows: entry ", k, " = ", row_indices[k],
                 " is out of range [0, ", rows, ")");
    SPATTN_CHECK(col_indices[k] >= 0 && col_indices[k] < cols, "cols: entry ", k, " = ", col_indices[k],
                 " is out of range [0, ", cols, ")");
  }
  // Counting sort by row, then sort and de-duplicate each row.
  std::vector<index_t> row_offsets(rows + 1, 0);
  for (index_t k = 0; k < count; ++k) ++row_offsets[row_indices[k] + 1];
  std::partial_sum(row_offsets.begin(), row_offsets.end(), row_offsets.begin());
  std::vector<index_t> columns(count);
  std::vector<index_t> next(row_offsets.begin(), row_offsets.end() - 1);
  for (index_t k = 0; k < count; ++k) columns[next[row_indices[k]]++] = col_indices[k];

  index_t out = 0;
  for (index_t row = 0; row < rows; ++row) {
    auto begin = columns.begin() + row_offsets[row];
    auto end = columns.begin() + row_offsets[row + 1];
    std::sort(begin, end);
    const auto unique_end = std::unique(begin, end);
    row_offsets[row] = out;
    out = static_cast<index_t>(std::move(begin, unique_end, columns.begin() + out) - columns.begin());
  }
  row_offsets[rows] = out;
  columns.resize(out);
  columns.shrink_to_fit();
  return trusted(rows, cols, std::move(row_offsets), std::move(columns));
}

}  // namespace spattn

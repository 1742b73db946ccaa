#pragma once
// CSR sparsity patterns: a non-owning view for kernels and an owning, validated type for everything
// else. Offsets and column indices are int64 so that patterns with more than 2^31 entries work.

#include <cstdint>
#include <vector>

namespace spattn {

using index_t = std::int64_t;

// A borrowed CSR pattern: row_offsets has rows + 1 entries, col_indices has row_offsets[rows].
struct CsrView {
  index_t rows = 0;
  index_t cols = 0;
  const index_t* row_offsets = nullptr;
  const index_t* col_indices = nullptr;

  index_t nnz() const { return row_offsets == nullptr ? 0 : row_offsets[rows]; }
  index_t row_length(index_t row) const { return row_offsets[row + 1] - row_offsets[row]; }
};

// An owning CSR pattern. Constructed only through validated paths, so a Csr is always well formed:
// monotonic offsets starting at 0, columns in range, sorted and unique within each row.
class Csr {
 public:
  Csr() : row_offsets_(1, 0) {}
  // Validates; throws spattn::Error naming what is wrong.
  Csr(index_t rows, index_t cols, std::vector<index_t> row_offsets, std::vector<index_t> col_indices);

  // mask is row-major rows x cols, nonzero bytes are entries.
  static Csr from_dense(const std::uint8_t* mask, index_t rows, index_t cols);
  // Entry k is (row_indices[k], col_indices[k]); any order, duplicates allowed (merged).
  static Csr from_coo(index_t rows, index_t cols, const index_t* row_indices, const index_t* col_indices,
                      index_t count);

  index_t rows() const { return rows_; }
  index_t cols() const { return cols_; }
  index_t nnz() const { return static_cast<index_t>(col_indices_.size()); }
  const std::vector<index_t>& row_offsets() const { return row_offsets_; }
  const std::vector<index_t>& col_indices() const { return col_indices_; }
  CsrView view() const { return {rows_, cols_, row_offsets_.data(), col_indices_.data()}; }

  // Hands the arrays over without copying (used by the Python bindings).
  std::vector<index_t> release_row_offsets() { return std::move(row_offsets_); }
  std::vector<index_t> release_col_indices() { return std::move(col_indices_); }

  // For generators that have already produced a well-formed pattern by construction: skips the O(nnz)
  // validation. Tests check every generator against validate().
  static Csr trusted(index_t rows, index_t cols, std::vector<index_t> row_offsets,
                     std::vector<index_t> col_indices);

 private:
  static Csr from_coo_unchecked(index_t rows, index_t cols, const index_t* row_indices, const index_t* col_indices,
                                index_t count);

  index_t rows_ = 0;
  index_t cols_ = 0;
  std::vector<index_t> row_offsets_;
  std::vector<index_t> col_indices_;
};

// Checks a raw CSR: sizes non-negative, rows + 1 offsets starting at 0, monotonic, last == nnz,
// columns in [0, cols), strictly increasing within each row. `name` prefixes every message.
void validate(CsrView pattern, index_t row_offsets_size, index_t col_indices_size, const char* name = "pattern");

// The transposed pattern and, for each of its entries, the position of the same entry in the original
// CSR order: values_transposed[t] = values[permutation[t]].
struct Transposed {
  Csr pattern;
  std::vector<index_t> permutation;
};
Transposed transpose(CsrView pattern);

// Set operations on patterns of the same shape.
Csr union_of(CsrView a, CsrView b);
Csr intersection_of(CsrView a, CsrView b);

// Row indices sorted by decreasing length (ties in increasing row order), for callers that want long rows to
// start first so that threads finish together. No kernel uses it (yet).
std::vector<index_t> rows_by_length(CsrView pattern);

}  // namespace spattn

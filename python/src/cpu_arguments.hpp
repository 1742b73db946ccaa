#pragma once
// Argument checks of the CPU kernel bindings (bind_cpu_kernels.cpp, bind_cpu_attention.cpp). Before the GIL is
// released and a kernel runs, every shape, dtype, layout and the pattern itself are checked, so that no size
// a caller passes can make the core read or write out of bounds. Errors are spattn::Error (ValueError in
// Python) naming the argument.

#include <cstdint>
#include <string>

#include "array_checks.hpp"
#include "spattn/spattn.hpp"

namespace spattn::python {

// On the CPU, of the given rank, C-contiguous (strides of size-1 axes do not matter).
inline void check_layout(const Array& array, const char* name, std::size_t ndim) {
  SPATTN_CHECK(array.device_type() == nb::device::cpu::value, name, " must be on the CPU");
  check_rank_and_contiguity(array, name, ndim);
}

inline const index_t* indices(const Array& array, const char* name) {
  check_layout(array, name, 1);
  SPATTN_CHECK(array.dtype() == nb::dtype<std::int64_t>(), name, " must be int64");
  return static_cast<const index_t*>(array.data());
}

// The pattern, fully validated (offsets, ranges, sorted columns): O(rows + nnz), small next to any kernel.
inline CsrView checked_pattern(index_t rows, index_t cols, const Array& row_offsets, const Array& col_indices,
                        const char* prefix = "") {
  const std::string offsets_name = std::string(prefix) + "row_offsets";
  const std::string columns_name = std::string(prefix) + "col_indices";
  const CsrView view{rows, cols, indices(row_offsets, offsets_name.c_str()),
                     indices(col_indices, columns_name.c_str())};
  SPATTN_CHECK(size(row_offsets, 0) == rows + 1, offsets_name, " must have ", rows + 1,
               " entries (rows + 1, rows taken from the dense operand), got ", size(row_offsets, 0));
  validate(view, size(row_offsets, 0), size(col_indices, 0), (std::string(prefix) + "pattern").c_str());
  return view;
}

// The transposed pattern must be exactly the transpose: for each of its entries t in row c, entry
// permutation[t] of the pattern lies in row t_col_indices[t] and column c. With both patterns validated
// (unique entries) and equal nnz this makes the permutation a bijection, so the kernels' column pass reads
// in bounds and reduces every entry once.
inline TransposedView checked_transposed(CsrView pattern, const Array& t_row_offsets, const Array& t_col_indices,
                                  const Array& permutation) {
  const CsrView t = checked_pattern(pattern.cols, pattern.rows, t_row_offsets, t_col_indices, "t_");
  const index_t* order = indices(permutation, "permutation");
  const index_t nnz = pattern.nnz();
  SPATTN_CHECK(t.nnz() == nnz && size(permutation, 0) == nnz, "t_col_indices and permutation must have nnz = ", nnz,
               " entries, got ", t.nnz(), " and ", size(permutation, 0));
  for (index_t col = 0; col < t.rows; ++col) {
    for (index_t j = t.row_offsets[col]; j < t.row_offsets[col + 1]; ++j) {
      const index_t e = order[j], row = t.col_indices[j];
      SPATTN_CHECK(e >= 0 && e < nnz && pattern.col_indices[e] == col && pattern.row_offsets[row] <= e &&
                       e < pattern.row_offsets[row + 1],
                   "permutation[", j, "] = ", e, " does not map the transposed pattern back to the pattern");
    }
  }
  return {t, order};
}

// Calls body(T{}) with T the storage type of `array`'s dtype.
template <typename Body>
inline void dispatch(const Array& array, const char* name, const Body& body) {
  const auto dtype = array.dtype();
  if (dtype == nb::dtype<float>()) {
    body(float{});
  } else if (dtype == nb::dtype<double>()) {
    body(double{});
  } else if (dtype == bfloat16_dtype) {
    body(bfloat16{});
  } else {
    detail::throw_error(name, " must be float32, float64 or bfloat16");
  }
}

template <typename T>
T* data(const Array& array) {
  return static_cast<T*>(array.data());
}

// A [batch, n, dim] operand: layout, batch, dtype equal to the first operand's.
inline void check_dense(const Array& array, const char* name, const Array& first, const char* first_name, index_t batch) {
  check_layout(array, name, 3);
  check_same_dtype(array, name, first, first_name);
  check_size(array, name, 0, batch, "the batch size");
}

// A [batch, nnz] array of pattern values.
inline void check_values(const Array& array, const char* name, const Array& first, const char* first_name, index_t batch,
                  index_t nnz) {
  check_layout(array, name, 2);
  check_same_dtype(array, name, first, first_name);
  check_size(array, name, 0, batch, "the batch size");
  check_size(array, name, 1, nnz, "the pattern's nnz");
}

inline void check_like(const Array& array, const char* name, const Array& like, const char* like_name) {
  check_layout(array, name, like.ndim());
  check_same_dtype(array, name, like, like_name);
  for (std::size_t axis = 0; axis < like.ndim(); ++axis) check_size(array, name, axis, size(like, axis), like_name);
}

}  // namespace spattn::python

#pragma once
// Argument checks of the CPU kernel bindings (bind_cpu_kernels.cpp, bind_cpu_attention.cpp), beyond the shared
// ones of array_checks.hpp (which these bindings call with `on_cpu`). Before the GIL is released and a kernel
// runs, every shape, dtype, layout and the pattern itself are checked, so that no size a caller passes can make
// the core read or write out of bounds. Unlike CUDA's, the pattern's contents are on the host and cheap to
// read, so they are validated here. Errors are spattn::Error (ValueError in Python) naming the argument.

#include <string>

#include "array_checks.hpp"
#include "spattn/spattn.hpp"

namespace spattn::python {

// The pattern, fully validated (offsets, ranges, sorted columns): O(rows + nnz), small next to any kernel.
inline CsrView checked_pattern(index_t rows, index_t cols, const Array& row_offsets, const Array& col_indices,
                               const char* prefix = "") {
  const CsrView view = csr_arrays(rows, cols, row_offsets, col_indices, on_cpu, prefix);
  validate(view, size(row_offsets, 0), nnz_of(col_indices), (std::string(prefix) + "pattern").c_str());
  return view;
}

// The transposed pattern must be exactly the transpose: for each of its entries t in row c, entry
// permutation[t] of the pattern lies in row t_col_indices[t] and column c. With both patterns validated
// (unique entries) and equal nnz this makes the permutation a bijection, so the kernels' column pass reads
// in bounds and reduces every entry once.
inline TransposedView checked_transposed(CsrView pattern, const Array& t_row_offsets, const Array& t_col_indices,
                                         const Array& permutation) {
  const index_t nnz = pattern.nnz();
  const TransposedView transposed = transposed_arrays(pattern, nnz, t_row_offsets, t_col_indices, permutation, on_cpu);
  const CsrView t = transposed.pattern;
  validate(t, size(t_row_offsets, 0), nnz_of(t_col_indices), "t_pattern");
  for (index_t col = 0; col < t.rows; ++col) {
    for (index_t j = t.row_offsets[col]; j < t.row_offsets[col + 1]; ++j) {
      const index_t e = transposed.permutation[j], row = t.col_indices[j];
      SPATTN_CHECK(e >= 0 && e < nnz && pattern.col_indices[e] == col && pattern.row_offsets[row] <= e &&
                       e < pattern.row_offsets[row + 1],
                   "permutation[", j, "] = ", e, " does not map the transposed pattern back to the pattern");
    }
  }
  return transposed;
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

}  // namespace spattn::python

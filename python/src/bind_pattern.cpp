// Bindings of CSR construction, algebra and the pattern generators. Every pattern returns as
// (rows, cols, row_offsets, col_indices) with NumPy arrays that own the core's buffers.

#include <nanobind/stl/pair.h>

#include "arrays.hpp"
#include "spattn/spattn.hpp"

namespace spattn::python {

void bind_pattern(nb::module_& m) {
  using Indices = CpuVector<const index_t>;
  using Bytes = CpuVector<const std::uint8_t>;
  using ByteMatrix = CpuMatrix<const std::uint8_t>;
  const auto release_gil = nb::call_guard<nb::gil_scoped_release>();

  m.def("csr_validate", [](index_t rows, index_t cols, Indices row_offsets, Indices col_indices) {
    SPATTN_CHECK(row_offsets.shape(0) >= 1, "row_offsets must have rows + 1 = ", rows + 1, " entries, got 0");
    validate(csr_view(rows, cols, row_offsets, col_indices), static_cast<index_t>(row_offsets.shape(0)),
             static_cast<index_t>(col_indices.shape(0)), "pattern");
  }, release_gil);

  m.def("csr_from_dense", [](ByteMatrix mask) {
    return csr_to_python(Csr::from_dense(mask.data(), mask.shape(0), mask.shape(1)));
  });
  m.def("csr_from_coo", [](index_t rows, index_t cols, Indices row_indices, Indices col_indices) {
    SPATTN_CHECK(row_indices.shape(0) == col_indices.shape(0), "rows and cols must have the same length, got ",
                 row_indices.shape(0), " and ", col_indices.shape(0));
    return csr_to_python(Csr::from_coo(rows, cols, row_indices.data(), col_indices.data(),
                                       static_cast<index_t>(row_indices.shape(0))));
  });
  m.def("csr_transpose", [](index_t rows, index_t cols, Indices row_offsets, Indices col_indices) {
    Transposed transposed = transpose(csr_view(rows, cols, row_offsets, col_indices));
    return nb::make_tuple(csr_to_python(std::move(transposed.pattern)), to_numpy(std::move(transposed.permutation)));
  });
  m.def("csr_union", [](index_t rows, index_t cols, Indices a_offsets, Indices a_columns, Indices b_offsets,
                        Indices b_columns) {
    return csr_to_python(union_of(csr_view(rows, cols, a_offsets, a_columns), csr_view(rows, cols, b_offsets, b_columns)));
  });
  m.def("csr_intersection", [](index_t rows, index_t cols, Indices a_offsets, Indices a_columns, Indices b_offsets,
                               Indices b_columns) {
    return csr_to_python(
        intersection_of(csr_view(rows, cols, a_offsets, a_columns), csr_view(rows, cols, b_offsets, b_columns)));
  });
  m.def("csr_rows_by_length", [](index_t rows, index_t cols, Indices row_offsets, Indices col_indices) {
    return to_numpy(rows_by_length(csr_view(rows, cols, row_offsets, col_indices)));
  });

  // Generators. Arguments are checked for type in Python and for value here.
  m.def("patterns_swin", [](index_t height, index_t width, index_t window_height, index_t window_width,
                            index_t shift_height, index_t shift_width) {
    return csr_to_python(patterns::swin(height, width, window_height, window_width, shift_height, shift_width));
  });
  m.def("patterns_local_1d", [](index_t n, index_t window_size) { return csr_to_python(patterns::local_1d(n, window_size)); });
  m.def("patterns_causal_1d", [](index_t n) { return csr_to_python(patterns::causal_1d(n)); });
  m.def("patterns_local_2d", [](index_t height, index_t width, double distance, double p) {
    return csr_to_python(patterns::local_2d(height, width, distance, p));
  });
  m.def("patterns_axial_2d", [](index_t height, index_t width) { return csr_to_python(patterns::axial_2d(height, width)); });
  m.def("patterns_dilated_2d", [](index_t height, index_t width, index_t k) {
    return csr_to_python(patterns::dilated_2d(height, width, k));
  });
  m.def("patterns_global_tokens", [](Bytes flags) {
    return csr_to_python(patterns::global_tokens(flags.data(), static_cast<index_t>(flags.shape(0))));
  });
  m.def("patterns_random", [](index_t rows, index_t cols, double density, std::uint64_t seed) {
    return csr_to_python(patterns::random(rows, cols, density, seed));
  });
  m.def("patterns_from_groups", [](Indices row_labels, Indices col_labels) {
    return csr_to_python(patterns::from_groups(row_labels.data(), static_cast<index_t>(row_labels.shape(0)),
                                               col_labels.data(), static_cast<index_t>(col_labels.shape(0))));
  });
  m.def("patterns_from_block_layout", [](ByteMatrix layout, index_t block_size) {
    return csr_to_python(patterns::from_block_layout(layout.data(), layout.shape(0), layout.shape(1), block_size));
  });
}

}  // namespace spattn::python

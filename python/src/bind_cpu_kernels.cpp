// Bindings of the unfused CPU kernels (SDDMM, sparse softmax, SpMM; attention: bind_cpu_attention.cpp).
// Every array arrives through DLPack without a copy (torch allocated each output); the dtype is dispatched
// at run time; every argument is checked first (cpu_arguments.hpp).

#include <nanobind/stl/optional.h>

#include <limits>
#include <optional>
#include <string>

#include "cpu_arguments.hpp"
#include "spattn/spattn.hpp"

namespace spattn::python {

namespace {

// Two [batch, n, dim] operands of one product: `second` has `first`'s batch size, dim and dtype.
void check_operand_pair(const Array& first, const char* first_name, const Array& second, const char* second_name) {
  check_layout(first, first_name, 3, on_cpu);
  check_dense(second, second_name, first, first_name, size(first, 0), on_cpu);
  check_size(second, second_name, 2, size(first, 2), (std::string(first_name) + "'s last dimension").c_str());
}

}  // namespace

void bind_cpu_kernels(nb::module_& m) {
  m.def("cpu_sddmm", [](Array a, Array b, Array row_offsets, Array col_indices, Array out) {
    check_operand_pair(a, "a", b, "b");
    nb::gil_scoped_release release;
    const CsrView pattern = checked_pattern(size(a, 1), size(b, 1), row_offsets, col_indices);
    check_values(out, "out", a, "a", size(a, 0), pattern.nnz(), on_cpu);
    dispatch(a, "a", [&](auto tag) {
      using T = decltype(tag);
      cpu::sddmm(pattern, data<T>(a), data<T>(b), data<T>(out), size(a, 0), size(a, 2));
    });
  }, nb::arg("a"), nb::arg("b"), nb::arg("row_offsets"), nb::arg("col_indices"), nb::arg("out"));

  m.def("cpu_sddmm_backward", [](Array grad, Array a, Array b, Array row_offsets, Array col_indices,
                                 Array t_row_offsets, Array t_col_indices, Array permutation, Array grad_a,
                                 Array grad_b) {
    check_operand_pair(a, "a", b, "b");
    check_like(grad_a, "grad_a", a, "a", on_cpu);
    check_like(grad_b, "grad_b", b, "b", on_cpu);
    nb::gil_scoped_release release;
    const CsrView pattern = checked_pattern(size(a, 1), size(b, 1), row_offsets, col_indices);
    const TransposedView transposed = checked_transposed(pattern, t_row_offsets, t_col_indices, permutation);
    check_values(grad, "grad", a, "a", size(a, 0), pattern.nnz(), on_cpu);
    dispatch(a, "a", [&](auto tag) {
      using T = decltype(tag);
      cpu::sddmm_backward(pattern, transposed, data<T>(grad), data<T>(a), data<T>(b), data<T>(grad_a),
                          data<T>(grad_b), size(a, 0), size(a, 2));
    });
  }, nb::arg("grad"), nb::arg("a"), nb::arg("b"), nb::arg("row_offsets"), nb::arg("col_indices"),
     nb::arg("t_row_offsets"), nb::arg("t_col_indices"), nb::arg("permutation"), nb::arg("grad_a"), nb::arg("grad_b"));

  // Softmax never reads column indices, but the pattern is validated all the same (any column count goes).
  m.def("cpu_sparse_softmax", [](Array values, Array row_offsets, Array col_indices, Array out) {
    check_layout(values, "values", 2, on_cpu);
    check_like(out, "out", values, "values", on_cpu);
    nb::gil_scoped_release release;
    const CsrView pattern = checked_pattern(size(row_offsets, 0) - 1, std::numeric_limits<index_t>::max(),
                                            row_offsets, col_indices);
    check_size(values, "values", 1, pattern.nnz(), "the pattern's nnz");
    dispatch(values, "values", [&](auto tag) {
      using T = decltype(tag);
      cpu::sparse_softmax(pattern, data<T>(values), data<T>(out), size(values, 0));
    });
  }, nb::arg("values"), nb::arg("row_offsets"), nb::arg("col_indices"), nb::arg("out"));

  m.def("cpu_sparse_softmax_backward",
        [](Array grad, Array out, Array row_offsets, Array col_indices, Array grad_values) {
    check_layout(out, "out", 2, on_cpu);
    check_like(grad, "grad", out, "out", on_cpu);
    check_like(grad_values, "grad_values", out, "out", on_cpu);
    nb::gil_scoped_release release;
    const CsrView pattern = checked_pattern(size(row_offsets, 0) - 1, std::numeric_limits<index_t>::max(),
                                            row_offsets, col_indices);
    check_size(out, "out", 1, pattern.nnz(), "the pattern's nnz");
    dispatch(out, "out", [&](auto tag) {
      using T = decltype(tag);
      cpu::sparse_softmax_backward(pattern, data<T>(grad), data<T>(out), data<T>(grad_values), size(out, 0));
    });
  }, nb::arg("grad"), nb::arg("out"), nb::arg("row_offsets"), nb::arg("col_indices"), nb::arg("grad_values"));

  m.def("cpu_spmm", [](Array values, Array b, Array row_offsets, Array col_indices, Array out) {
    check_layout(b, "b", 3, on_cpu);
    check_layout(out, "out", 3, on_cpu);
    check_same_dtype(out, "out", b, "b");
    check_size(out, "out", 0, size(b, 0), "the batch size");
    check_size(out, "out", 2, size(b, 2), "b's last dimension");
    nb::gil_scoped_release release;
    const CsrView pattern = checked_pattern(size(out, 1), size(b, 1), row_offsets, col_indices);
    check_values(values, "values", b, "b", size(b, 0), pattern.nnz(), on_cpu);
    dispatch(b, "b", [&](auto tag) {
      using T = decltype(tag);
      cpu::spmm(pattern, data<T>(values), data<T>(b), data<T>(out), size(b, 0), size(b, 2));
    });
  }, nb::arg("values"), nb::arg("b"), nb::arg("row_offsets"), nb::arg("col_indices"), nb::arg("out"));

  m.def("cpu_spmm_backward", [](Array grad_out, Array values, Array b, Array row_offsets, Array col_indices,
                                Array t_row_offsets, Array t_col_indices, Array permutation, Array grad_values,
                                Array grad_b) {
    check_operand_pair(b, "b", grad_out, "grad_out");
    check_like(grad_b, "grad_b", b, "b", on_cpu);
    nb::gil_scoped_release release;
    const CsrView pattern = checked_pattern(size(grad_out, 1), size(b, 1), row_offsets, col_indices);
    const TransposedView transposed = checked_transposed(pattern, t_row_offsets, t_col_indices, permutation);
    check_values(values, "values", b, "b", size(b, 0), pattern.nnz(), on_cpu);
    check_like(grad_values, "grad_values", values, "values", on_cpu);
    dispatch(b, "b", [&](auto tag) {
      using T = decltype(tag);
      cpu::spmm_backward(pattern, transposed, data<T>(grad_out), data<T>(values), data<T>(b), data<T>(grad_values),
                         data<T>(grad_b), size(b, 0), size(b, 2));
    });
  }, nb::arg("grad_out"), nb::arg("values"), nb::arg("b"), nb::arg("row_offsets"), nb::arg("col_indices"),
     nb::arg("t_row_offsets"), nb::arg("t_col_indices"), nb::arg("permutation"), nb::arg("grad_values"),
     nb::arg("grad_b"));
}

}  // namespace spattn::python

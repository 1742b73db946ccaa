// Bindings of the CPU kernels. Every array arrives through DLPack without a copy (torch allocated each
// output); the dtype is dispatched at run time. Before the GIL is released and a kernel runs, every shape,
// dtype, layout and the pattern itself are checked, so that no size a caller passes can make the core read
// or write out of bounds. Errors are spattn::Error (ValueError in Python) naming the argument.

#include <nanobind/stl/optional.h>

#include <limits>
#include <optional>
#include <string>

#include "array_checks.hpp"
#include "arrays.hpp"
#include "spattn/spattn.hpp"

namespace spattn::python {

namespace {

// On the CPU, of the given rank, C-contiguous (strides of size-1 axes do not matter).
void check_layout(const Array& array, const char* name, std::size_t ndim) {
  SPATTN_CHECK(array.device_type() == nb::device::cpu::value, name, " must be on the CPU");
  check_rank_and_contiguity(array, name, ndim);
}

const index_t* indices(const Array& array, const char* name) {
  check_layout(array, name, 1);
  SPATTN_CHECK(array.dtype() == nb::dtype<std::int64_t>(), name, " must be int64");
  return static_cast<const index_t*>(array.data());
}

// The pattern, fully validated (offsets, ranges, sorted columns): O(rows + nnz), small next to any kernel.
CsrView checked_pattern(index_t rows, index_t cols, const Array& row_offsets, const Array& col_indices,
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
TransposedView checked_transposed(CsrView pattern, const Array& t_row_offsets, const Array& t_col_indices,
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
void dispatch(const Array& array, const char* name, const Body& body) {
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
void check_dense(const Array& array, const char* name, const Array& first, const char* first_name, index_t batch) {
  check_layout(array, name, 3);
  check_same_dtype(array, name, first, first_name);
  check_size(array, name, 0, batch, "the batch size");
}

// A [batch, nnz] array of pattern values.
void check_values(const Array& array, const char* name, const Array& first, const char* first_name, index_t batch,
                  index_t nnz) {
  check_layout(array, name, 2);
  check_same_dtype(array, name, first, first_name);
  check_size(array, name, 0, batch, "the batch size");
  check_size(array, name, 1, nnz, "the pattern's nnz");
}

void check_like(const Array& array, const char* name, const Array& like, const char* like_name) {
  check_layout(array, name, like.ndim());
  check_same_dtype(array, name, like, like_name);
  for (std::size_t axis = 0; axis < like.ndim(); ++axis) check_size(array, name, axis, size(like, axis), like_name);
}

}  // namespace

void bind_cpu_kernels(nb::module_& m) {
  m.def("cpu_sddmm", [](Array a, Array b, Array row_offsets, Array col_indices, Array out) {
    check_layout(a, "a", 3);
    check_dense(b, "b", a, "a", size(a, 0));
    check_size(b, "b", 2, size(a, 2), "a's last dimension");
    nb::gil_scoped_release release;
    const CsrView pattern = checked_pattern(size(a, 1), size(b, 1), row_offsets, col_indices);
    check_values(out, "out", a, "a", size(a, 0), pattern.nnz());
    dispatch(a, "a", [&](auto tag) {
      using T = decltype(tag);
      cpu::sddmm(pattern, data<T>(a), data<T>(b), data<T>(out), size(a, 0), size(a, 2));
    });
  }, nb::arg("a"), nb::arg("b"), nb::arg("row_offsets"), nb::arg("col_indices"), nb::arg("out"));

  m.def("cpu_sddmm_backward", [](Array grad, Array a, Array b, Array row_offsets, Array col_indices,
                                 Array t_row_offsets, Array t_col_indices, Array permutation, Array grad_a,
                                 Array grad_b) {
    check_layout(a, "a", 3);
    check_dense(b, "b", a, "a", size(a, 0));
    check_size(b, "b", 2, size(a, 2), "a's last dimension");
    check_like(grad_a, "grad_a", a, "a");
    check_like(grad_b, "grad_b", b, "b");
    nb::gil_scoped_release release;
    const CsrView pattern = checked_pattern(size(a, 1), size(b, 1), row_offsets, col_indices);
    const TransposedView transposed = checked_transposed(pattern, t_row_offsets, t_col_indices, permutation);
    check_values(grad, "grad", a, "a", size(a, 0), pattern.nnz());
    dispatch(a, "a", [&](auto tag) {
      using T = decltype(tag);
      cpu::sddmm_backward(pattern, transposed, data<T>(grad), data<T>(a), data<T>(b), data<T>(grad_a),
                          data<T>(grad_b), size(a, 0), size(a, 2));
    });
  }, nb::arg("grad"), nb::arg("a"), nb::arg("b"), nb::arg("row_offsets"), nb::arg("col_indices"),
     nb::arg("t_row_offsets"), nb::arg("t_col_indices"), nb::arg("permutation"), nb::arg("grad_a"), nb::arg("grad_b"));

  // Softmax never reads column indices, but the pattern is validated all the same (any column count goes).
  m.def("cpu_sparse_softmax", [](Array values, Array row_offsets, Array col_indices, Array out) {
    check_layout(values, "values", 2);
    check_like(out, "out", values, "values");
    nb::gil_scoped_release release;
    const CsrView pattern = checked_pattern(size(row_offsets, 0) - 1, std::numeric_limits<index_t>::max(),
                                            row_offsets, col_indices);
    check_size(values, "values", 1, pattern.nnz(), "the pattern's nnz");
    dispatch(values, "values", [&](auto tag) {
      using T = decltype(tag);
      cpu::sparse_softmax(pattern, data<T>(values), data<T>(out), size(values, 0));
    });
  }, nb::arg("values"), nb::arg("row_offsets"), nb::arg("col_indices"), nb::arg("out"));

  m.def("cpu_sparse_softmax_backward", [](Array grad, Array out, Array row_offsets, Array col_indices,
                                          Array grad_values) {
    check_layout(out, "out", 2);
    check_like(grad, "grad", out, "out");
    check_like(grad_values, "grad_values", out, "out");
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
    check_layout(b, "b", 3);
    check_layout(out, "out", 3);
    check_same_dtype(out, "out", b, "b");
    check_size(out, "out", 0, size(b, 0), "the batch size");
    check_size(out, "out", 2, size(b, 2), "b's last dimension");
    nb::gil_scoped_release release;
    const CsrView pattern = checked_pattern(size(out, 1), size(b, 1), row_offsets, col_indices);
    check_values(values, "values", b, "b", size(b, 0), pattern.nnz());
    dispatch(b, "b", [&](auto tag) {
      using T = decltype(tag);
      cpu::spmm(pattern, data<T>(values), data<T>(b), data<T>(out), size(b, 0), size(b, 2));
    });
  }, nb::arg("values"), nb::arg("b"), nb::arg("row_offsets"), nb::arg("col_indices"), nb::arg("out"));

  m.def("cpu_spmm_backward", [](Array grad_out, Array values, Array b, Array row_offsets, Array col_indices,
                                Array t_row_offsets, Array t_col_indices, Array permutation, Array grad_values,
                                Array grad_b) {
    check_layout(b, "b", 3);
    check_dense(grad_out, "grad_out", b, "b", size(b, 0));
    check_size(grad_out, "grad_out", 2, size(b, 2), "b's last dimension");
    check_like(grad_b, "grad_b", b, "b");
    nb::gil_scoped_release release;
    const CsrView pattern = checked_pattern(size(grad_out, 1), size(b, 1), row_offsets, col_indices);
    const TransposedView transposed = checked_transposed(pattern, t_row_offsets, t_col_indices, permutation);
    check_values(values, "values", b, "b", size(b, 0), pattern.nnz());
    check_like(grad_values, "grad_values", values, "values");
    dispatch(b, "b", [&](auto tag) {
      using T = decltype(tag);
      cpu::spmm_backward(pattern, transposed, data<T>(grad_out), data<T>(values), data<T>(b), data<T>(grad_values),
                         data<T>(grad_b), size(b, 0), size(b, 2));
    });
  }, nb::arg("grad_out"), nb::arg("values"), nb::arg("b"), nb::arg("row_offsets"), nb::arg("col_indices"),
     nb::arg("t_row_offsets"), nb::arg("t_col_indices"), nb::arg("permutation"), nb::arg("grad_values"),
     nb::arg("grad_b"));

  // q [batch, rows, D], k [batch, cols, D], v [batch, cols, Dv], bias [bias_heads, nnz] or None;
  // out [batch, rows, Dv]; lse [batch, rows] float64 for float64 inputs, float32 otherwise.
  struct Attention {
    CsrView pattern;
    AttentionDims dims;
  };
  const auto check_attention = [](const Array& q, const Array& k, const Array& v, const OptionalArray& bias,
                                  const Array& row_offsets, const Array& col_indices, const Array& lse) {
    check_layout(q, "q", 3);
    check_dense(k, "k", q, "q", size(q, 0));
    check_dense(v, "v", q, "q", size(q, 0));
    check_size(k, "k", 2, size(q, 2), "q's head dim");
    check_size(v, "v", 1, size(k, 1), "k's number of keys");
    check_layout(lse, "lse", 2);
    check_size(lse, "lse", 0, size(q, 0), "the batch size");
    check_size(lse, "lse", 1, size(q, 1), "the number of queries");
    SPATTN_CHECK(lse.dtype() == (q.dtype() == nb::dtype<double>() ? nb::dtype<double>() : nb::dtype<float>()),
                 "lse must be float64 for float64 inputs and float32 otherwise");
    const CsrView pattern = checked_pattern(size(q, 1), size(k, 1), row_offsets, col_indices);
    AttentionDims dims{size(q, 0), size(q, 2), size(v, 2), 0};
    if (bias) {
      check_layout(*bias, "bias", 2);
      check_same_dtype(*bias, "bias", q, "q");
      check_size(*bias, "bias", 1, pattern.nnz(), "the pattern's nnz");
      SPATTN_CHECK(size(*bias, 0) >= 1, "bias must have at least one head, got shape ", shape_of(*bias));
      dims.bias_heads = size(*bias, 0);
    }
    return Attention{pattern, dims};
  };

  m.def("cpu_attention_forward", [check_attention](Array q, Array k, Array v, OptionalArray bias, Array row_offsets,
                                                   Array col_indices, double scale, Array out, Array lse) {
    nb::gil_scoped_release release;
    const Attention attention = check_attention(q, k, v, bias, row_offsets, col_indices, lse);
    check_dense(out, "out", q, "q", size(q, 0));
    check_size(out, "out", 1, size(q, 1), "the number of queries");
    check_size(out, "out", 2, size(v, 2), "v's last dimension");
    dispatch(q, "q", [&](auto tag) {
      using T = decltype(tag);
      cpu::attention_forward(attention.pattern, data<T>(q), data<T>(k), data<T>(v), bias ? data<T>(*bias) : nullptr,
                             attention.dims, scale, data<T>(out), data<accumulate_t<T>>(lse));
    });
  }, nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("bias").none(), nb::arg("row_offsets"),
     nb::arg("col_indices"), nb::arg("scale"), nb::arg("out"), nb::arg("lse"));

  // In elements of the accumulation type (float64 for float64 inputs, float32 otherwise).
  m.def("cpu_attention_backward_workspace_size", [](index_t batch, index_t nnz) {
    const index_t offsets[2] = {0, nnz};
    return cpu::attention_backward_workspace_size(CsrView{1, 1, offsets, nullptr}, AttentionDims{batch, 0, 0, 0});
  }, nb::arg("batch"), nb::arg("nnz"));

  m.def("cpu_attention_backward", [check_attention](Array grad_out, Array q, Array k, Array v, OptionalArray bias,
                                                    Array out, Array lse, Array row_offsets, Array col_indices,
                                                    Array t_row_offsets, Array t_col_indices, Array permutation,
                                                    double scale, Array grad_q, Array grad_k, Array grad_v,
                                                    OptionalArray grad_bias, Array workspace) {
    nb::gil_scoped_release release;
    const Attention attention = check_attention(q, k, v, bias, row_offsets, col_indices, lse);
    const TransposedView transposed = checked_transposed(attention.pattern, t_row_offsets, t_col_indices, permutation);
    check_dense(out, "out", q, "q", size(q, 0));
    check_size(out, "out", 1, size(q, 1), "the number of queries");
    check_size(out, "out", 2, size(v, 2), "v's last dimension");
    check_like(grad_out, "grad_out", out, "out");
    check_like(grad_q, "grad_q", q, "q");
    check_like(grad_k, "grad_k", k, "k");
    check_like(grad_v, "grad_v", v, "v");
    if (grad_bias) {
      SPATTN_CHECK(bias.has_value(), "grad_bias must be None when bias is None");
      check_like(*grad_bias, "grad_bias", *bias, "bias");
    }
    check_layout(workspace, "workspace", 1);
    check_same_dtype(workspace, "workspace", lse, "lse");
    const index_t needed = cpu::attention_backward_workspace_size(attention.pattern, attention.dims);
    SPATTN_CHECK(size(workspace, 0) >= needed, "workspace must have at least ", needed, " elements, got ",
                 size(workspace, 0));
    dispatch(q, "q", [&](auto tag) {
      using T = decltype(tag);
      cpu::attention_backward(attention.pattern, transposed, data<T>(q), data<T>(k), data<T>(v),
                              bias ? data<T>(*bias) : nullptr, data<T>(out), data<T>(grad_out),
                              data<accumulate_t<T>>(lse), attention.dims, scale, data<T>(grad_q), data<T>(grad_k),
                              data<T>(grad_v), grad_bias ? data<T>(*grad_bias) : nullptr,
                              data<accumulate_t<T>>(workspace));
    });
  }, nb::arg("grad_out"), nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("bias").none(), nb::arg("out"),
     nb::arg("lse"), nb::arg("row_offsets"), nb::arg("col_indices"), nb::arg("t_row_offsets"),
     nb::arg("t_col_indices"), nb::arg("permutation"), nb::arg("scale"), nb::arg("grad_q"), nb::arg("grad_k"),
     nb::arg("grad_v"), nb::arg("grad_bias").none(), nb::arg("workspace"));
}

}  // namespace spattn::python

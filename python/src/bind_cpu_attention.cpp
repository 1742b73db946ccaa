// Bindings of the fused CPU attention kernels. q, k, v, out and grad_out may be strided: [batch, N, dim] or
// [B, H, N, dim] with any strides but a contiguous last axis, so that q, k and v can be views of one fused
// projection and out can be written in [B, N, H, dim] order, without copies (the kernels take the layouts).
// Gradients and lse are contiguous. An execution plan (group_offsets, group_rows; None for none) is checked
// against the pattern before a kernel trusts it.

#include <nanobind/stl/optional.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <utility>
#include <vector>

#include "attention_operands.hpp"
#include "cpu_arguments.hpp"
#include "spattn/spattn.hpp"

namespace spattn::python {

namespace {

// The plan, if given, is checked to be a plan of this pattern: group_offsets rise from 0 to rows,
// group_rows is a permutation of the rows, and every row of a group has its group's column list (O(rows +
// nnz), like the pattern's own validation).
GroupsView checked_groups(CsrView pattern, const OptionalArray& group_offsets, const OptionalArray& group_rows) {
  SPATTN_CHECK(group_offsets.has_value() == group_rows.has_value(),
               "group_offsets and group_rows must be given together (both None for no plan)");
  if (!group_offsets) return {};
  const index_t* offsets = indices(*group_offsets, "group_offsets", on_cpu);
  const index_t* rows_of_groups = indices(*group_rows, "group_rows", on_cpu);
  const index_t groups = size(*group_offsets, 0) - 1;
  SPATTN_CHECK(groups >= 0 && offsets[0] == 0 && offsets[groups] == pattern.rows,
               "group_offsets must start at 0 and end at the number of queries, ", pattern.rows);
  SPATTN_CHECK(size(*group_rows, 0) == pattern.rows, "group_rows must have one entry per query (", pattern.rows,
               "), got ", size(*group_rows, 0));
  std::vector<bool> seen(static_cast<std::size_t>(pattern.rows), false);
  for (index_t g = 0; g < groups; ++g) {
    SPATTN_CHECK(offsets[g] <= offsets[g + 1] && offsets[g + 1] <= pattern.rows,
                 "group_offsets must be non-decreasing, from 0 to the number of queries");
    if (offsets[g] == offsets[g + 1]) continue;
    const index_t first = rows_of_groups[offsets[g]];
    SPATTN_CHECK(first >= 0 && first < pattern.rows, "group_rows must be a permutation of the queries, got ", first);
    for (index_t i = offsets[g]; i < offsets[g + 1]; ++i) {
      const index_t row = rows_of_groups[i];
      SPATTN_CHECK(row >= 0 && row < pattern.rows && !seen[static_cast<std::size_t>(row)],
                   "group_rows must be a permutation of the queries, got ", row, " at ", i);
      seen[static_cast<std::size_t>(row)] = true;
      const index_t length = pattern.row_length(first);
      SPATTN_CHECK(pattern.row_length(row) == length &&
                       std::equal(pattern.col_indices + pattern.row_offsets[row],
                                  pattern.col_indices + pattern.row_offsets[row] + length,
                                  pattern.col_indices + pattern.row_offsets[first]),
                   "group_rows: row ", row, " does not have the columns of its group's first row ", first,
                   " (the plan is not this pattern's)");
    }
  }
  return {groups, offsets, rows_of_groups};
}

// The operands (attention_operands.hpp), the pattern, validated, and its plan, checked against it.
struct Attention : AttentionOperands {
  CsrView pattern;
  GroupsView groups;
};

Attention check_attention(const Array& q, const Array& k, const Array& v, const OptionalArray& bias,
                          const Array& row_offsets, const Array& col_indices, const OptionalArray& group_offsets,
                          const OptionalArray& group_rows, const Array& lse) {
  const bool float64 = q.dtype() == nb::dtype<double>();
  Attention attention{
      attention_operands(q, k, v, bias, nnz_of(col_indices), lse, float64 ? nb::dtype<double>() : nb::dtype<float>(),
                         "float64 for float64 inputs and float32 otherwise", on_cpu),
      {},
      {}};
  attention.pattern = checked_pattern(attention.rows, attention.cols, row_offsets, col_indices);
  attention.groups = checked_groups(attention.pattern, group_offsets, group_rows);
  return attention;
}

}  // namespace

void bind_cpu_attention(nb::module_& m) {
  m.def("cpu_attention_forward", [](Array q, Array k, Array v, OptionalArray bias, Array row_offsets,
                                    Array col_indices, OptionalArray group_offsets, OptionalArray group_rows,
                                    double scale, Array out, Array lse) {
    nb::gil_scoped_release release;
    Attention attention = check_attention(q, k, v, bias, row_offsets, col_indices, group_offsets, group_rows, lse);
    attention.layouts.out = out_layout(out, "out", q, attention, on_cpu);
    check_no_overlap(out, "out");
    dispatch(q, "q", [&](auto tag) {
      using T = decltype(tag);
      cpu::attention_forward(attention.pattern, attention.groups, data<T>(q), data<T>(k), data<T>(v),
                             bias ? data<T>(*bias) : nullptr, attention.dims, attention.layouts, scale, data<T>(out),
                             data<accumulate_t<T>>(lse));
    });
  }, nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("bias").none(), nb::arg("row_offsets"),
     nb::arg("col_indices"), nb::arg("group_offsets").none(), nb::arg("group_rows").none(), nb::arg("scale"),
     nb::arg("out"), nb::arg("lse"));

  // In elements of the accumulation type (float64 for float64 inputs, float32 otherwise).
  m.def("cpu_attention_backward_workspace_size", [](index_t batch, index_t nnz) {
    const index_t offsets[2] = {0, nnz};
    return cpu::attention_backward_workspace_size(CsrView{1, 1, offsets, nullptr}, AttentionDims{batch, 0, 0, 0});
  }, nb::arg("batch"), nb::arg("nnz"));

  // grad_q, grad_k, grad_v: contiguous, shaped like q, k, v. grad_lse: the gradient reaching lse (None: none),
  // contiguous like lse.
  m.def("cpu_attention_backward", [](Array grad_out, Array q, Array k, Array v, OptionalArray bias, Array out,
                                     Array lse, OptionalArray grad_lse, Array row_offsets, Array col_indices,
                                     Array t_row_offsets, Array t_col_indices, Array permutation,
                                     OptionalArray group_offsets, OptionalArray group_rows, double scale,
                                     Array grad_q, Array grad_k, Array grad_v, OptionalArray grad_bias,
                                     Array workspace) {
    nb::gil_scoped_release release;
    Attention attention = check_attention(q, k, v, bias, row_offsets, col_indices, group_offsets, group_rows, lse);
    const TransposedView transposed = checked_transposed(attention.pattern, t_row_offsets, t_col_indices, permutation);
    attention.layouts.out = out_layout(out, "out", q, attention, on_cpu);
    attention.layouts.grad_out = out_layout(grad_out, "grad_out", q, attention, on_cpu);
    check_like(grad_q, "grad_q", q, "q", on_cpu);
    check_like(grad_k, "grad_k", k, "k", on_cpu);
    check_like(grad_v, "grad_v", v, "v", on_cpu);
    if (grad_lse) check_like(*grad_lse, "grad_lse", lse, "lse", on_cpu);
    if (grad_bias) {
      SPATTN_CHECK(bias.has_value(), "grad_bias must be None when bias is None");
      check_like(*grad_bias, "grad_bias", *bias, "bias", on_cpu);
    }
    check_layout(workspace, "workspace", 1, on_cpu);
    check_same_dtype(workspace, "workspace", lse, "lse");
    const index_t needed = cpu::attention_backward_workspace_size(attention.pattern, attention.dims);
    SPATTN_CHECK(size(workspace, 0) >= needed, "workspace must have at least ", needed, " elements, got ",
                 size(workspace, 0));
    dispatch(q, "q", [&](auto tag) {
      using T = decltype(tag);
      cpu::attention_backward(attention.pattern, transposed, attention.groups, data<T>(q), data<T>(k), data<T>(v),
                              bias ? data<T>(*bias) : nullptr, data<T>(out), data<T>(grad_out),
                              data<accumulate_t<T>>(lse), grad_lse ? data<accumulate_t<T>>(*grad_lse) : nullptr,
                              attention.dims, attention.layouts, scale, data<T>(grad_q), data<T>(grad_k),
                              data<T>(grad_v), grad_bias ? data<T>(*grad_bias) : nullptr,
                              data<accumulate_t<T>>(workspace));
    });
  }, nb::arg("grad_out"), nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("bias").none(), nb::arg("out"),
     nb::arg("lse"), nb::arg("grad_lse").none(), nb::arg("row_offsets"), nb::arg("col_indices"),
     nb::arg("t_row_offsets"), nb::arg("t_col_indices"), nb::arg("permutation"), nb::arg("group_offsets").none(),
     nb::arg("group_rows").none(), nb::arg("scale"), nb::arg("grad_q"), nb::arg("grad_k"), nb::arg("grad_v"),
     nb::arg("grad_bias").none(), nb::arg("workspace"));
}

}  // namespace spattn::python

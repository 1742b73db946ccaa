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

// An operand on the CPU (see attention_operands.hpp).
OperandLayout checked_operand(const Array& array, const char* name, const Array& q, ProblemShape shape, index_t heads,
                              index_t rows, const char* rows_meaning, index_t dim, const char* dim_meaning) {
  SPATTN_CHECK(array.device_type() == nb::device::cpu::value, name, " must be on the CPU");
  return strided_operand(array, name, q, shape, heads, rows, rows_meaning, dim, dim_meaning);
}

// A contiguous array of rank `ndim` whose leading sizes are q's (lse: q's shape without its last axis).
void check_contiguous_like(const Array& array, const char* name, ProblemShape shape, std::size_t ndim) {
  SPATTN_CHECK(array.device_type() == nb::device::cpu::value, name, " must be on the CPU");
  check_rank_and_contiguity(array, name, ndim);
  check_size(array, name, 0, shape.leading, "q's dimension 0");
  if (shape.ndim == 4) check_size(array, name, 1, shape.heads, "q's number of heads");
}

// The plan, if given, is checked to be a plan of this pattern: group_offsets rise from 0 to rows,
// group_rows is a permutation of the rows, and every row of a group has its group's column list (O(rows +
// nnz), like the pattern's own validation).
GroupsView checked_groups(CsrView pattern, const OptionalArray& group_offsets, const OptionalArray& group_rows) {
  SPATTN_CHECK(group_offsets.has_value() == group_rows.has_value(),
               "group_offsets and group_rows must be given together (both None for no plan)");
  if (!group_offsets) return {};
  const index_t* offsets = indices(*group_offsets, "group_offsets");
  const index_t* rows_of_groups = indices(*group_rows, "group_rows");
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

struct Attention {
  CsrView pattern;
  GroupsView groups;
  AttentionDims dims;
  AttentionLayouts layouts;
  ProblemShape shape;
};

// q [.., Nq, D], k [.., Nk, D], v [.., Nk, Dv] (3-D or 4-D, strided), bias [bias_heads, nnz] or None,
// lse [.., Nq] contiguous (float64 for float64 inputs, else float32), the pattern and its plan.
Attention check_attention(const Array& q, const Array& k, const Array& v, const OptionalArray& bias,
                          const Array& row_offsets, const Array& col_indices, const OptionalArray& group_offsets,
                          const OptionalArray& group_rows, const Array& lse) {
  const auto [shape, rows, cols, head_dim, value_dim] = operand_sizes(q, k, v);
  Attention attention{};
  attention.shape = shape;
  attention.layouts.q =
      checked_operand(q, "q", q, shape, shape.heads, rows, "q's number of queries", head_dim, "q's head dim");
  attention.layouts.k =
      checked_operand(k, "k", q, shape, shape.kv_heads, cols, "k's number of keys", head_dim, "q's head dim");
  attention.layouts.v =
      checked_operand(v, "v", q, shape, shape.kv_heads, cols, "k's number of keys", value_dim, "v's head dim");
  check_contiguous_like(lse, "lse", shape, shape.ndim - 1);
  check_size(lse, "lse", shape.ndim - 2, rows, "the number of queries");
  SPATTN_CHECK(lse.dtype() == (q.dtype() == nb::dtype<double>() ? nb::dtype<double>() : nb::dtype<float>()),
               "lse must be float64 for float64 inputs and float32 otherwise");
  attention.pattern = checked_pattern(rows, cols, row_offsets, col_indices);
  attention.groups = checked_groups(attention.pattern, group_offsets, group_rows);
  attention.dims = AttentionDims{shape.batch(), head_dim, value_dim, 0, shape.heads, shape.head_group()};
  if (bias) {
    check_layout(*bias, "bias", 2);
    check_same_dtype(*bias, "bias", q, "q");
    check_size(*bias, "bias", 1, attention.pattern.nnz(), "the pattern's nnz");
    const index_t bias_heads = size(*bias, 0);
    SPATTN_CHECK(bias_heads == 1 || bias_heads == shape.heads || bias_heads == shape.batch(), "bias must have 1, ",
                 shape.heads, " (q's heads) or ", shape.batch(), " (one per problem, [B, H, nnz]) rows, got shape ",
                 shape_of(*bias));
    attention.dims.bias_heads = bias_heads;
  }
  return attention;
}

// out (forward output, backward input): like q's rows with v's dim.
OperandLayout checked_out(const Array& out, const char* name, const Array& q, const Attention& attention) {
  return checked_operand(out, name, q, attention.shape, attention.shape.heads, attention.pattern.rows,
                         "the number of queries", attention.dims.value_dim, "v's head dim");
}

}  // namespace

void bind_cpu_attention(nb::module_& m) {
  m.def("cpu_attention_forward", [](Array q, Array k, Array v, OptionalArray bias, Array row_offsets,
                                    Array col_indices, OptionalArray group_offsets, OptionalArray group_rows,
                                    double scale, Array out, Array lse) {
    nb::gil_scoped_release release;
    Attention attention = check_attention(q, k, v, bias, row_offsets, col_indices, group_offsets, group_rows, lse);
    attention.layouts.out = checked_out(out, "out", q, attention);
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
    attention.layouts.out = checked_out(out, "out", q, attention);
    attention.layouts.grad_out = checked_out(grad_out, "grad_out", q, attention);
    check_like(grad_q, "grad_q", q, "q");
    check_like(grad_k, "grad_k", k, "k");
    check_like(grad_v, "grad_v", v, "v");
    if (grad_lse) check_like(*grad_lse, "grad_lse", lse, "lse");
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

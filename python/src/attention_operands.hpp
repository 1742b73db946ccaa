#pragma once
// The strided operands of the fused attention bindings, CPU (bind_cpu_attention.cpp) and CUDA
// (bind_cuda_attention.cpp): q, k, v, out and grad_out are [batch, N, dim] or [B, H, N, dim] with
// any non-negative strides but a contiguous last axis, so that q, k and v can be views of one fused projection
// ([B, N, 3, H, D]) and out can be written in [B, N, H, dim] order without copies; the kernels take where
// their rows live as OperandLayouts (spattn/kernels.hpp). Every check takes the place the arrays must be in
// (array_checks.hpp): `on_cpu` or the call's CudaDevice.

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "array_checks.hpp"
#include "spattn/kernels.hpp"

namespace spattn::python {

// The problem shape read off q: [batch, rows, D] (heads = 1) or [B, heads, rows, D] (batch = B * heads).
struct ProblemShape {
  std::size_t ndim;
  index_t leading;  // B, or batch for 3-D operands
  index_t heads;
  index_t kv_heads;  // k's and v's: a divisor of heads under grouped-query attention (GQA/MQA), else heads
  index_t batch() const { return leading * heads; }
  // Query heads reading each k/v head (1 when the heads match, even with none: q [B, 0, N, D]).
  index_t head_group() const { return kv_heads == heads ? 1 : heads / kv_heads; }
};

inline ProblemShape shape_of_q(const Array& q) {
  SPATTN_CHECK(q.ndim() == 3 || q.ndim() == 4, "q must be 3-D [batch, N, D] or 4-D [B, H, N, D], got shape ",
               shape_of(q));
  const index_t heads = q.ndim() == 4 ? size(q, 1) : 1;
  return {q.ndim(), size(q, 0), heads, heads};
}

// The sizes of a fused attention call, read off q [.., Nq, D], k [.., Nk, D] and v [.., Nk, Dv] once k and v
// are known to have q's rank; strided_operand checks the rest of each operand against them. 4-D k and v may
// have fewer heads than q, a divisor of q's (grouped-query attention).
struct OperandSizes {
  ProblemShape shape;
  index_t rows, cols, head_dim, value_dim;
};

inline OperandSizes operand_sizes(const Array& q, const Array& k, const Array& v) {
  const std::size_t ndim = shape_of_q(q).ndim;
  SPATTN_CHECK(k.ndim() == ndim, "k must be ", ndim, "-D like q, got shape ", shape_of(k));
  SPATTN_CHECK(v.ndim() == ndim, "v must be ", ndim, "-D like q, got shape ", shape_of(v));
  ProblemShape shape = shape_of_q(q);
  if (shape.ndim == 4) {
    shape.kv_heads = size(k, 1);
    SPATTN_CHECK(shape.kv_heads == shape.heads || (shape.kv_heads >= 1 && shape.heads % shape.kv_heads == 0), "k: its ",
                 shape.kv_heads, " heads must divide q's ", shape.heads, " (grouped-query attention), got shape ",
                 shape_of(k));
  }
  return {shape, size(q, shape.ndim - 2), size(k, shape.ndim - 2), size(q, shape.ndim - 1), size(v, shape.ndim - 1)};
}

// An operand with q's rank and leading sizes, `heads` heads (q's, or k's for k and v), `rows` rows of `dim`,
// q's dtype, last axis contiguous. Returns where its rows live (head_group > 1 when it has fewer heads than q); the
// stride of an axis of extent 1 is never used and is given as 0 (torch gives such axes arbitrary strides, which would
// otherwise spoil the kernels' alignment checks).
template <class Place>
OperandLayout strided_operand(const Array& array, const char* name, const Array& q, ProblemShape shape, index_t heads,
                              index_t rows, const char* rows_meaning, index_t dim, const char* dim_meaning,
                              Place& place) {
  place.check(array, name);
  SPATTN_CHECK(array.ndim() == shape.ndim, name, " must be ", shape.ndim, "-D like q, got shape ", shape_of(array));
  check_same_dtype(array, name, q, "q");
  check_size(array, name, 0, shape.leading, "q's dimension 0");
  if (shape.ndim == 4)
    check_size(array, name, 1, heads, heads == shape.heads ? "q's number of heads" : "k's number of heads");
  check_size(array, name, shape.ndim - 2, rows, rows_meaning);
  check_size(array, name, shape.ndim - 1, dim, dim_meaning);
  // An empty operand is never read or written, whatever its strides (torch gives an expanded empty gradient 0).
  SPATTN_CHECK(dim <= 1 || array.size() == 0 || array.stride(shape.ndim - 1) == 1, name,
               " must be contiguous in its last dimension, got strides with ", array.stride(shape.ndim - 1));
  for (std::size_t axis = 0; axis < shape.ndim; ++axis) {
    SPATTN_CHECK(array.stride(axis) >= 0, name, " must not have negative strides");
  }
  const auto stride = [&array](std::size_t axis) -> index_t {
    return array.shape(axis) > 1 ? static_cast<index_t>(array.stride(axis)) : 0;
  };
  const index_t head_group = heads == shape.heads ? 1 : shape.heads / heads;  // 1 also with no heads
  return {stride(0), shape.ndim == 4 ? stride(1) : 0, stride(shape.ndim - 2), head_group};
}

// An output written through its strides: no two elements may share memory (an expanded tensor would make
// threads race), i.e. ordered by stride, every axis steps over the whole extent of the ones below it.
inline void check_no_overlap(const Array& array, const char* name) {
  std::vector<std::pair<std::int64_t, std::int64_t>> axes;  // (stride, size) of axes longer than 1
  for (std::size_t axis = 0; axis < array.ndim(); ++axis) {
    if (array.shape(axis) > 1) axes.emplace_back(array.stride(axis), static_cast<std::int64_t>(array.shape(axis)));
  }
  std::sort(axes.begin(), axes.end());
  std::int64_t extent = 1;
  for (const auto& [stride, length] : axes) {
    SPATTN_CHECK(stride >= extent, name, " must not overlap itself (an expanded or overlapping view)");
    extent = stride * length;
  }
}

// What every fused attention call checks of its operands, CPU or CUDA: q [.., Nq, D], k [.., Nk, D], v [.., Nk,
// Dv] (3-D or 4-D, strided; 4-D k and v may have fewer heads, a divisor of q's), lse [.., Nq] contiguous of
// `lse_dtype`, bias [1 | H | B * H, nnz] or None (shared, per head, per problem), all in `place`. The pattern is
// the backend's to check (its contents are read on the CPU only); nnz is the size of its col_indices.
struct AttentionOperands {
  ProblemShape shape;
  AttentionDims dims;
  AttentionLayouts layouts;  // out and grad_out are filled in by out_layout
  index_t rows, cols;
};

template <class Place>
AttentionOperands attention_operands(const Array& q, const Array& k, const Array& v, const OptionalArray& bias,
                                     index_t nnz, const Array& lse, nb::dlpack::dtype lse_dtype,
                                     const char* lse_dtype_rule, Place& place) {
  place.check(q, "q");
  const auto [shape, rows, cols, head_dim, value_dim] = operand_sizes(q, k, v);
  AttentionOperands operands{
      shape, AttentionDims{shape.batch(), head_dim, value_dim, 0, shape.heads, shape.head_group()}, {}, rows, cols};
  operands.layouts.q =
      strided_operand(q, "q", q, shape, shape.heads, rows, "q's number of queries", head_dim, "q's head dim", place);
  operands.layouts.k =
      strided_operand(k, "k", q, shape, shape.kv_heads, cols, "k's number of keys", head_dim, "q's head dim", place);
  operands.layouts.v =
      strided_operand(v, "v", q, shape, shape.kv_heads, cols, "k's number of keys", value_dim, "v's head dim", place);
  check_layout(lse, "lse", shape.ndim - 1, place);
  check_size(lse, "lse", 0, shape.leading, "q's dimension 0");
  if (shape.ndim == 4) check_size(lse, "lse", 1, shape.heads, "q's number of heads");
  check_size(lse, "lse", shape.ndim - 2, rows, "the number of queries");
  SPATTN_CHECK(lse.dtype() == lse_dtype, "lse must be ", lse_dtype_rule);
  if (bias) {
    check_layout(*bias, "bias", 2, place);
    check_same_dtype(*bias, "bias", q, "q");
    check_size(*bias, "bias", 1, nnz, "the pattern's nnz");
    const index_t bias_heads = size(*bias, 0);
    SPATTN_CHECK(bias_heads == 1 || bias_heads == shape.heads || bias_heads == shape.batch(), "bias must have 1, ",
                 shape.heads, " (q's heads) or ", shape.batch(), " (one per problem, [B, H, nnz]) rows, got shape ",
                 shape_of(*bias));
    operands.dims.bias_heads = bias_heads;
  }
  return operands;
}

// out (forward output, backward input) or grad_out: like q's rows with v's dim, strided.
template <class Place>
OperandLayout out_layout(const Array& out, const char* name, const Array& q, const AttentionOperands& operands,
                         Place& place) {
  return strided_operand(out, name, q, operands.shape, operands.shape.heads, operands.rows, "the number of queries",
                         operands.dims.value_dim, "v's head dim", place);
}

}  // namespace spattn::python

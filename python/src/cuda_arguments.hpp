#pragma once
// Argument checks of the CUDA kernel bindings (bind_cuda_kernels.cpp, bind_cuda_attention.cpp). Every array arrives
// through DLPack without a copy; every shape, dtype, layout and device is checked on the host before a kernel
// is enqueued, so that no size a caller passes can make a kernel read or write out of bounds. The pattern's
// and the plan's contents (offsets, column indices, the permutation, groups, steps) live on the device and are
// not re-read here (that would synchronise): they must come from a validated spattn.Pattern and its plan.
// Errors are spattn::Error (ValueError in Python) naming the argument. (A namespace of its own: the CPU
// bindings' helpers of the same names differ.)

#include <cstdint>
#include <optional>
#include <string>

#include "array_checks.hpp"
#include "attention_operands.hpp"
#include "spattn/spattn.hpp"

namespace spattn::python::cuda_arguments {

inline void require_cuda_build() { SPATTN_CHECK(build_info().cuda, "spattn was built without CUDA support"); }

inline cudaStream_t as_stream(std::uintptr_t stream) { return reinterpret_cast<cudaStream_t>(stream); }

// All arrays of one call sit on the CUDA device of its first array.
struct Device {
  int id = -1;
};

inline void check_device(const Array& array, const char* name, Device& device) {
  SPATTN_CHECK(array.device_type() == nb::device::cuda::value, name, " must be on a CUDA device");
  if (device.id < 0) device.id = array.device_id();
  SPATTN_CHECK(array.device_id() == device.id, name, " is on cuda:", array.device_id(),
               " but the other arguments are on cuda:", device.id);
}

// On the CUDA device, of the given rank, C-contiguous (strides of size-1 axes do not matter).
inline void check_layout(const Array& array, const char* name, std::size_t ndim, Device& device) {
  check_device(array, name, device);
  check_rank_and_contiguity(array, name, ndim);
}

inline const index_t* indices(const Array& array, const char* name, Device& device) {
  check_layout(array, name, 1, device);
  SPATTN_CHECK(array.dtype() == nb::dtype<std::int64_t>(), name, " must be int64");
  return static_cast<const index_t*>(array.data());
}

// The pattern's shape from the arrays' sizes: row_offsets has rows + 1 entries, col_indices nnz.
inline CsrView device_pattern(index_t rows, index_t cols, const Array& row_offsets, const Array& col_indices,
                              Device& device, const char* prefix = "") {
  const std::string offsets_name = std::string(prefix) + "row_offsets";
  const std::string columns_name = std::string(prefix) + "col_indices";
  const CsrView view{rows, cols, indices(row_offsets, offsets_name.c_str(), device),
                     indices(col_indices, columns_name.c_str(), device)};
  SPATTN_CHECK(size(row_offsets, 0) == rows + 1, offsets_name, " must have ", rows + 1,
               " entries (rows + 1, rows taken from the dense operand), got ", size(row_offsets, 0));
  return view;
}

inline index_t nnz_of(const Array& col_indices) { return size(col_indices, 0); }

inline TransposedView device_transposed(CsrView pattern, index_t nnz, const Array& t_row_offsets,
                                        const Array& t_col_indices, const Array& permutation, Device& device) {
  const CsrView t = device_pattern(pattern.cols, pattern.rows, t_row_offsets, t_col_indices, device, "t_");
  const index_t* order = indices(permutation, "permutation", device);
  SPATTN_CHECK(nnz_of(t_col_indices) == nnz && size(permutation, 0) == nnz,
               "t_col_indices and permutation must have nnz = ", nnz, " entries, got ", nnz_of(t_col_indices),
               " and ", size(permutation, 0));
  return {t, order};
}

// Calls body(T{}) with T the storage type of `array`'s dtype.
template <typename Body>
void dispatch(const Array& array, const char* name, const Body& body) {
  const auto dtype = array.dtype();
  if (dtype == nb::dtype<float>()) {
    body(float{});
  } else if (dtype == float16_dtype) {
    body(float16{});
  } else if (dtype == bfloat16_dtype) {
    body(bfloat16{});
  } else {
    detail::throw_error(name, " must be float32, float16 or bfloat16 on CUDA");
  }
}

template <typename T>
T* data(const Array& array) {
  return static_cast<T*>(array.data());
}

inline void check_dense(const Array& array, const char* name, const Array& first, const char* first_name,
                        index_t batch, Device& device) {
  check_layout(array, name, 3, device);
  check_same_dtype(array, name, first, first_name);
  check_size(array, name, 0, batch, "the batch size");
}

inline void check_values(const Array& array, const char* name, const Array& first, const char* first_name,
                         index_t batch, index_t nnz, Device& device) {
  check_layout(array, name, 2, device);
  check_same_dtype(array, name, first, first_name);
  check_size(array, name, 0, batch, "the batch size");
  check_size(array, name, 1, nnz, "the pattern's nnz");
}

inline void check_like(const Array& array, const char* name, const Array& like, const char* like_name,
                       Device& device) {
  check_layout(array, name, like.ndim(), device);
  check_same_dtype(array, name, like, like_name);
  for (std::size_t axis = 0; axis < like.ndim(); ++axis) check_size(array, name, axis, size(like, axis), like_name);
}

// ---- fused attention -------------------------------------------------------------------------------------
struct Attention {
  CsrView pattern;
  index_t nnz;
  AttentionDims dims;
  AttentionLayouts layouts;
  ProblemShape shape;
};

// An operand on the call's device, strided (attention_operands.hpp).
inline OperandLayout device_operand(const Array& array, const char* name, const Array& q, ProblemShape shape,
                                    index_t heads, index_t rows, const char* rows_meaning, index_t dim,
                                    const char* dim_meaning, Device& device) {
  check_device(array, name, device);
  return strided_operand(array, name, q, shape, heads, rows, rows_meaning, dim, dim_meaning);
}

// q [.., Nq, D], k [.., Nk, D], v [.., Nk, Dv] (3-D [batch, N, dim] or 4-D [B, H, N, dim], strided, last axis
// contiguous), bias [bias_heads, nnz] or None, lse [.., Nq] float32 contiguous.
inline Attention check_attention(const Array& q, const Array& k, const Array& v, const OptionalArray& bias,
                                 const Array& row_offsets, const Array& col_indices, const Array& lse,
                                 Device& device) {
  check_device(q, "q", device);
  const auto [shape, rows, cols, head_dim, value_dim] = operand_sizes(q, k, v);
  Attention attention{};
  attention.shape = shape;
  attention.layouts.q =
      device_operand(q, "q", q, shape, shape.heads, rows, "q's number of queries", head_dim, "q's head dim", device);
  attention.layouts.k =
      device_operand(k, "k", q, shape, shape.kv_heads, cols, "k's number of keys", head_dim, "q's head dim", device);
  attention.layouts.v =
      device_operand(v, "v", q, shape, shape.kv_heads, cols, "k's number of keys", value_dim, "v's head dim", device);
  check_layout(lse, "lse", shape.ndim - 1, device);
  check_size(lse, "lse", 0, shape.leading, "q's dimension 0");
  if (shape.ndim == 4) check_size(lse, "lse", 1, shape.heads, "q's number of heads");
  check_size(lse, "lse", shape.ndim - 2, rows, "the number of queries");
  SPATTN_CHECK(lse.dtype() == nb::dtype<float>(), "lse must be float32");
  attention.pattern = device_pattern(rows, cols, row_offsets, col_indices, device);
  attention.nnz = nnz_of(col_indices);
  attention.dims = AttentionDims{shape.batch(), head_dim, value_dim, 0, shape.heads, shape.head_group()};
  SPATTN_CHECK(head_dim <= cuda::max_attention_dim && value_dim <= cuda::max_attention_dim,
               "q and v: head dims up to ", cuda::max_attention_dim, " are supported on CUDA, got ", head_dim,
               " and ", value_dim);
  if (bias) {
    check_layout(*bias, "bias", 2, device);
    check_same_dtype(*bias, "bias", q, "q");
    check_size(*bias, "bias", 1, attention.nnz, "the pattern's nnz");
    SPATTN_CHECK(size(*bias, 0) >= 1, "bias must have at least one head, got shape ", shape_of(*bias));
    attention.dims.bias_heads = size(*bias, 0);
  }
  return attention;
}

// out (forward output, backward input) or grad_out: like q's rows with v's dim, strided.
inline OperandLayout checked_out(const Array& out, const char* name, const Array& q, const Attention& attention,
                                 Device& device) {
  return device_operand(out, name, q, attention.shape, attention.shape.heads, attention.pattern.rows,
                        "the number of queries", attention.dims.value_dim, "v's head dim", device);
}

// The execution plan, optional: group_offsets [groups + 1] and group_rows [rows] (both or neither); with it,
// optionally, its schedule (Pattern.plan_schedule()): steps [step_count, kStepWarps, 2] and, where the caller
// takes them (with_unowned), unowned_columns [m <= cols], both or neither.
inline GroupsView device_groups(CsrView pattern, const OptionalArray& group_offsets, const OptionalArray& group_rows,
                                const OptionalArray& steps, const OptionalArray& unowned_columns, bool with_unowned,
                                Device& device) {
  SPATTN_CHECK(group_offsets.has_value() == group_rows.has_value(),
               "group_offsets and group_rows must be given together");
  GroupsView groups;
  if (group_offsets) {
    groups.group_offsets = indices(*group_offsets, "group_offsets", device);
    SPATTN_CHECK(size(*group_offsets, 0) >= 1, "group_offsets must have groups + 1 >= 1 entries, got 0");
    groups.groups = size(*group_offsets, 0) - 1;
    groups.group_rows = indices(*group_rows, "group_rows", device);
    SPATTN_CHECK(size(*group_rows, 0) == pattern.rows, "group_rows must have ", pattern.rows,
                 " entries (every row in one group), got ", size(*group_rows, 0));
  }
  if (with_unowned) {
    SPATTN_CHECK(steps.has_value() == unowned_columns.has_value(),
                 "steps and unowned_columns must be given together (both None for no schedule)");
  }
  if (!steps) return groups;
  SPATTN_CHECK(group_offsets.has_value(), "steps: a schedule needs its plan (group_offsets and group_rows)");
  check_layout(*steps, "steps", 3, device);
  SPATTN_CHECK(steps->dtype() == nb::dtype<std::int64_t>(), "steps must be int64");
  check_size(*steps, "steps", 1, kStepWarps, "the warps of a step");
  check_size(*steps, "steps", 2, 2, "(group, first row)");
  groups.step_count = size(*steps, 0);
  groups.steps = static_cast<const index_t*>(steps->data());
  if (with_unowned) {
    groups.unowned_columns = indices(*unowned_columns, "unowned_columns", device);
    groups.unowned_column_count = size(*unowned_columns, 0);
    SPATTN_CHECK(groups.unowned_column_count <= pattern.cols, "unowned_columns must have at most ", pattern.cols,
                 " entries (the number of keys), got ", groups.unowned_column_count);
  }
  return groups;
}

}  // namespace spattn::python::cuda_arguments

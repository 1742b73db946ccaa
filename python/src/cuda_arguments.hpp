#pragma once
// Argument checks of the CUDA kernel bindings (bind_cuda_kernels.cpp, bind_cuda_attention.cpp). Every array arrives
// through DLPack without a copy; every shape, dtype, layout and device is checked on the host before a kernel
// is enqueued, so that no size a caller passes can make a kernel read or write out of bounds. The pattern's
// and the plan's contents (offsets, column indices, the permutation, groups, steps) live on the device and are
// not re-read here (that would synchronise): they must come from a validated spattn.Pattern and its plan.
// Errors are spattn::Error (ValueError in Python) naming the argument. The checks shared with the CPU bindings
// (array_checks.hpp, attention_operands.hpp) take the call's CudaDevice as their place.

#include <cstdint>
#include <optional>
#include <string>

#include "array_checks.hpp"
#include "attention_operands.hpp"
#include "spattn/spattn.hpp"

namespace spattn::python::cuda_arguments {

inline void require_cuda_build() { SPATTN_CHECK(build_info().cuda, "spattn was built without CUDA support"); }

inline cudaStream_t as_stream(std::uintptr_t stream) { return reinterpret_cast<cudaStream_t>(stream); }

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

// ---- fused attention -------------------------------------------------------------------------------------
// The operands (attention_operands.hpp) and the pattern, whose contents stay on the device.
struct Attention : AttentionOperands {
  CsrView pattern;
  index_t nnz;
};

inline Attention check_attention(const Array& q, const Array& k, const Array& v, const OptionalArray& bias,
                                 const Array& row_offsets, const Array& col_indices, const Array& lse,
                                 CudaDevice& device) {
  const index_t nnz = nnz_of(col_indices);
  Attention attention{attention_operands(q, k, v, bias, nnz, lse, nb::dtype<float>(), "float32", device), {}, nnz};
  attention.pattern = csr_arrays(attention.rows, attention.cols, row_offsets, col_indices, device);
  const AttentionDims& dims = attention.dims;
  SPATTN_CHECK(dims.head_dim <= cuda::max_attention_dim && dims.value_dim <= cuda::max_attention_dim,
               "q and v: head dims up to ", cuda::max_attention_dim, " are supported on CUDA, got ", dims.head_dim,
               " and ", dims.value_dim);
  return attention;
}

// The execution plan, optional: group_offsets [groups + 1] and group_rows [rows] (both or neither); with it,
// optionally, its schedule (Pattern.plan_schedule()): steps [step_count, kStepWarps, 2] and, where the caller
// takes them (with_unowned), unowned_columns [m <= cols], both or neither.
inline GroupsView device_groups(CsrView pattern, const OptionalArray& group_offsets, const OptionalArray& group_rows,
                                const OptionalArray& steps, const OptionalArray& unowned_columns, bool with_unowned,
                                CudaDevice& device) {
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

// Bindings of the execution plan: building it (NumPy arrays owning the core's buffers) and the grouped CUDA
// attention forward that consumes it. Like bind_cuda_kernels.cpp, every shape, dtype, layout and device is
// checked on the host before a kernel runs; the device arrays' contents (pattern and plan) are not re-read
// here (that would synchronise): they must come from a validated spattn.Pattern and its plan().

#include <nanobind/stl/optional.h>

#include <cstdint>
#include <optional>
#include <string>

#include "array_checks.hpp"
#include "arrays.hpp"
#include "spattn/plan.hpp"
#include "spattn/spattn.hpp"

namespace spattn::python {

namespace {

// On the CUDA device of the first array checked (device_id < 0 before it), of rank ndim, C-contiguous.
void check_layout(const Array& array, const char* name, std::size_t ndim, int& device_id) {
  SPATTN_CHECK(array.device_type() == nb::device::cuda::value, name, " must be on a CUDA device");
  if (device_id < 0) device_id = array.device_id();
  SPATTN_CHECK(array.device_id() == device_id, name, " is on cuda:", array.device_id(),
               " but the other arguments are on cuda:", device_id);
  check_rank_and_contiguity(array, name, ndim);
}

// A dense operand or output: 3-D, q's dtype, batch and row count as given.
void check_dense(const Array& array, const char* name, const Array& q, index_t rows, const char* rows_meaning,
                 int& device_id) {
  check_layout(array, name, 3, device_id);
  SPATTN_CHECK(array.dtype() == q.dtype(), name, " must have the same dtype as q");
  check_size(array, name, 0, size(q, 0), "the batch size");
  check_size(array, name, 1, rows, rows_meaning);
}

const index_t* indices(const Array& array, const char* name, index_t entries, const char* meaning, int& device_id) {
  check_layout(array, name, 1, device_id);
  SPATTN_CHECK(array.dtype() == nb::dtype<std::int64_t>(), name, " must be int64");
  if (entries >= 0) check_size(array, name, 0, entries, meaning);
  return static_cast<const index_t*>(array.data());
}

template <typename Body>
void dispatch(const Array& array, const Body& body) {
  const auto dtype = array.dtype();
  if (dtype == nb::dtype<float>()) {
    body(float{});
  } else if (dtype == float16_dtype) {
    body(float16{});
  } else if (dtype == bfloat16_dtype) {
    body(bfloat16{});
  } else {
    detail::throw_error("q must be float32, float16 or bfloat16 on CUDA");
  }
}

template <typename T>
T* data(const Array& array) {
  return static_cast<T*>(array.data());
}

}  // namespace

void bind_plan(nb::module_& m) {
  using Indices = CpuVector<const index_t>;
  m.def("csr_plan", [](index_t rows, index_t cols, Indices row_offsets, Indices col_indices) {
    SPATTN_CHECK(row_offsets.shape(0) >= 1, "row_offsets must have rows + 1 = ", rows + 1, " entries, got 0");
    const CsrView view = csr_view(rows, cols, row_offsets, col_indices);
    // The plan reads every offset and column: the arrays must be a well-formed pattern.
    validate(view, static_cast<index_t>(row_offsets.shape(0)), static_cast<index_t>(col_indices.shape(0)), "pattern");
    ExecutionPlan plan;
    {
      nb::gil_scoped_release release;
      plan = build_plan(view);
    }
    // steps as [step_count, kStepWarps, 2]: (group, first row within the group) of each warp of each step.
    const auto step_count = static_cast<std::size_t>(plan.step_count());
    return nb::make_tuple(to_numpy(std::move(plan.group_offsets)), to_numpy(std::move(plan.group_rows)),
                          to_numpy(std::move(plan.steps), {step_count, static_cast<std::size_t>(kStepWarps), 2}),
                          to_numpy(std::move(plan.unowned_columns)));
  }, nb::arg("rows"), nb::arg("cols"), nb::arg("row_offsets"), nb::arg("col_indices"));

  // q [batch, rows, D], k [batch, cols, D], v [batch, cols, Dv], bias [bias_heads, nnz] or None, out
  // [batch, rows, Dv], lse [batch, rows] float32; group_offsets [groups + 1], group_rows [rows].
  m.def("cuda_attention_forward_grouped", [](Array q, Array k, Array v, OptionalArray bias, Array row_offsets,
                                             Array col_indices, Array group_offsets, Array group_rows, double scale,
                                             Array out, Array lse, std::uintptr_t stream) {
    SPATTN_CHECK(build_info().cuda, "spattn was built without CUDA support");
    int device_id = -1;
    check_layout(q, "q", 3, device_id);
    const index_t batch = size(q, 0), rows = size(q, 1), head_dim = size(q, 2);
    check_layout(k, "k", 3, device_id);
    const index_t cols = size(k, 1);
    check_dense(k, "k", q, cols, "k's number of keys", device_id);
    check_size(k, "k", 2, head_dim, "q's head dim");
    check_dense(v, "v", q, cols, "k's number of keys", device_id);
    const index_t value_dim = size(v, 2);
    check_dense(out, "out", q, rows, "the number of queries", device_id);
    check_size(out, "out", 2, value_dim, "v's last dimension");
    check_layout(lse, "lse", 2, device_id);
    SPATTN_CHECK(lse.dtype() == nb::dtype<float>(), "lse must be float32");
    check_size(lse, "lse", 0, batch, "the batch size");
    check_size(lse, "lse", 1, rows, "the number of queries");
    SPATTN_CHECK(head_dim <= cuda::max_attention_dim && value_dim <= cuda::max_attention_dim,
                 "q and v: head dims up to ", cuda::max_attention_dim, " are supported on CUDA, got ", head_dim,
                 " and ", value_dim);
    const CsrView pattern{rows, cols,
                          indices(row_offsets, "row_offsets", rows + 1, "rows + 1 (rows from q)", device_id),
                          indices(col_indices, "col_indices", -1, "", device_id)};
    const index_t nnz = size(col_indices, 0);
    const index_t* offsets_of_groups = indices(group_offsets, "group_offsets", -1, "", device_id);
    SPATTN_CHECK(size(group_offsets, 0) >= 1, "group_offsets must have groups + 1 >= 1 entries, got 0");
    const GroupsView groups{size(group_offsets, 0) - 1, offsets_of_groups,
                            indices(group_rows, "group_rows", rows, "the number of queries (every row in one group)",
                                    device_id)};
    AttentionDims dims{batch, head_dim, value_dim, 0};
    if (bias) {
      check_layout(*bias, "bias", 2, device_id);
      SPATTN_CHECK(bias->dtype() == q.dtype(), "bias must have the same dtype as q");
      check_size(*bias, "bias", 1, nnz, "the pattern's nnz");
      SPATTN_CHECK(size(*bias, 0) >= 1, "bias must have at least one head, got shape ", shape_of(*bias));
      dims.bias_heads = size(*bias, 0);
    }
    nb::gil_scoped_release release;
    dispatch(q, [&](auto tag) {
      using T = decltype(tag);
      cuda::attention_forward_grouped(pattern, groups, data<T>(q), data<T>(k), data<T>(v),
                                      bias ? data<T>(*bias) : nullptr, dims, scale, data<T>(out), data<float>(lse),
                                      reinterpret_cast<cudaStream_t>(stream));
    });
  }, nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("bias").none(), nb::arg("row_offsets"),
     nb::arg("col_indices"), nb::arg("group_offsets"), nb::arg("group_rows"), nb::arg("scale"), nb::arg("out"),
     nb::arg("lse"), nb::arg("stream"));
}

}  // namespace spattn::python

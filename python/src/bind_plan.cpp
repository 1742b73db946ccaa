// Bindings of the execution plan: building it (NumPy arrays owning the core's buffers) and the grouped CUDA
// attention forward that consumes it. Like bind_cuda_kernels.cpp (cuda_arguments.hpp), every shape, dtype,
// layout and device is checked on the host before a kernel runs; the device arrays' contents (pattern, plan
// and schedule) are not re-read here (that would synchronise): they must come from a validated
// spattn.Pattern, its plan() and plan_schedule().

#include <nanobind/stl/optional.h>

#include <cstdint>
#include <optional>
#include <string>

#include "array_checks.hpp"
#include "arrays.hpp"
#include "cuda_arguments.hpp"
#include "spattn/plan.hpp"
#include "spattn/spattn.hpp"

namespace spattn::python {

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

  // Operands as cuda_attention_forward (bind_cuda_kernels.cpp: 3-D or 4-D, strided); group_offsets
  // [groups + 1], group_rows [rows]; steps [step_count, kStepWarps, 2] (Pattern.plan_schedule()) or None.
  m.def("cuda_attention_forward_grouped", [](Array q, Array k, Array v, OptionalArray bias, Array row_offsets,
                                             Array col_indices, Array group_offsets, Array group_rows,
                                             OptionalArray steps, double scale, Array out, Array lse,
                                             std::uintptr_t stream) {
    using namespace cuda_arguments;
    require_cuda_build();
    Device device;
    Attention attention = check_attention(q, k, v, bias, row_offsets, col_indices, lse, device);
    attention.layouts.out = checked_out(out, "out", q, attention, device);
    check_no_overlap(out, "out");
    const GroupsView groups =
        device_groups(attention.pattern, group_offsets, group_rows, steps, std::nullopt, false, device);
    nb::gil_scoped_release release;
    dispatch(q, "q", [&](auto tag) {
      using T = decltype(tag);
      cuda::attention_forward_grouped(attention.pattern, groups, data<T>(q), data<T>(k), data<T>(v),
                                      bias ? data<T>(*bias) : nullptr, attention.dims, attention.layouts, scale,
                                      data<T>(out), data<float>(lse), as_stream(stream));
    });
  }, nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("bias").none(), nb::arg("row_offsets"),
     nb::arg("col_indices"), nb::arg("group_offsets"), nb::arg("group_rows"), nb::arg("steps").none(),
     nb::arg("scale"), nb::arg("out"), nb::arg("lse"), nb::arg("stream"));
}

}  // namespace spattn::python

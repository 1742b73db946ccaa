// Binding of the execution plan: building it (NumPy arrays owning the core's buffers). The kernels that consume
// it are bound beside the rest of their op: bind_cpu_attention.cpp and bind_cuda_attention.cpp.

#include <utility>

#include "arrays.hpp"
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
}

}  // namespace spattn::python

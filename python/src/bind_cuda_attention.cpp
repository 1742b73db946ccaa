// Bindings of the fused CUDA attention: the row-by-row forward, the forward over the execution plan (grouped) and
// the backward with or without the plan. Arrays arrive through DLPack without a copy; kernels are enqueued on
// `stream` and nothing synchronises. q, k, v, out and grad_out are strided (attention_operands.hpp), as on the
// CPU (bind_cpu_attention.cpp); the other checks are cuda_arguments.hpp's: every shape, dtype, layout and device
// on the host first, while the device arrays' contents (pattern, transpose, plan and schedule) are not re-read
// (that would synchronise): they must come from a validated spattn.Pattern, its plan() and plan_schedule(). In
// a build without CUDA the functions exist and raise "spattn was built without CUDA support".

#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include <cstdint>
#include <optional>
#include <string>

#include "array_checks.hpp"
#include "arrays.hpp"
#include "cuda_arguments.hpp"
#include "spattn/spattn.hpp"

namespace spattn::python {

void bind_cuda_attention(nb::module_& m) {
  using namespace cuda_arguments;
  // q [.., Nq, D], k [.., Nk, D], v [.., Nk, Dv], out [.., Nq, Dv]: 3-D or 4-D, strided (last axis
  // contiguous); lse [.., Nq] float32 contiguous; bias [bias_heads, nnz] or None.
  m.def("cuda_attention_forward", [](Array q, Array k, Array v, OptionalArray bias, Array row_offsets,
                                     Array col_indices, double scale, Array out, Array lse, std::uintptr_t stream) {
    require_cuda_build();
    CudaDevice device;
    Attention attention = check_attention(q, k, v, bias, row_offsets, col_indices, lse, device);
    attention.layouts.out = out_layout(out, "out", q, attention, device);
    check_no_overlap(out, "out");
    nb::gil_scoped_release release;
    dispatch(q, "q", [&](auto tag) {
      using T = decltype(tag);
      cuda::attention_forward(attention.pattern, data<T>(q), data<T>(k), data<T>(v),
                              bias ? data<T>(*bias) : nullptr, attention.dims, attention.layouts, scale, data<T>(out),
                              data<float>(lse), as_stream(stream));
    });
  }, nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("bias").none(), nb::arg("row_offsets"),
     nb::arg("col_indices"), nb::arg("scale"), nb::arg("out"), nb::arg("lse"), nb::arg("stream"));

  // Operands as cuda_attention_forward; group_offsets [groups + 1], group_rows [rows]; steps
  // [step_count, kStepWarps, 2] (Pattern.plan_schedule()) or None.
  m.def("cuda_attention_forward_grouped", [](Array q, Array k, Array v, OptionalArray bias, Array row_offsets,
                                             Array col_indices, Array group_offsets, Array group_rows,
                                             OptionalArray steps, double scale, Array out, Array lse,
                                             std::uintptr_t stream) {
    require_cuda_build();
    CudaDevice device;
    Attention attention = check_attention(q, k, v, bias, row_offsets, col_indices, lse, device);
    attention.layouts.out = out_layout(out, "out", q, attention, device);
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

  // In float32 elements; bias_heads = 0 when no bias gradient is computed. batch counts query problems;
  // head_group > 1 (grouped-query attention) needs cols, head_dim and value_dim too.
  m.def("cuda_attention_backward_workspace_size", [](index_t batch, index_t rows, index_t nnz, index_t bias_heads,
                                                     index_t cols, index_t head_dim, index_t value_dim,
                                                     index_t head_group) {
    require_cuda_build();
    SPATTN_CHECK(batch >= 0 && rows >= 0 && nnz >= 0 && bias_heads >= 0 && cols >= 0 && head_dim >= 0 &&
                     value_dim >= 0,
                 "sizes must be non-negative");
    SPATTN_CHECK(head_group >= 1, "head_group must be at least 1, got ", head_group);
    const AttentionDims dims{batch, head_dim, value_dim, bias_heads, 1, head_group};
    return cuda::attention_backward_workspace_size(CsrView{rows, cols, nullptr, nullptr}, nnz, dims);
  }, nb::arg("batch"), nb::arg("rows"), nb::arg("nnz"), nb::arg("bias_heads"), nb::arg("cols") = 0,
     nb::arg("head_dim") = 0, nb::arg("value_dim") = 0, nb::arg("head_group") = 1);

  // Operands as cuda_attention_forward (grad_out like out); grad_q, grad_k, grad_v contiguous, shaped like q,
  // k, v (k and v may have fewer heads than q: grouped-query attention). The plan (group_offsets, group_rows)
  // and its schedule (steps, unowned_columns) are optional; so is grad_lse (like lse: the gradient reaching it).
  m.def("cuda_attention_backward", [](Array grad_out, Array q, Array k, Array v, OptionalArray bias, Array out,
                                      Array lse, Array row_offsets, Array col_indices, Array t_row_offsets,
                                      Array t_col_indices, Array permutation, double scale, Array grad_q,
                                      Array grad_k, Array grad_v, OptionalArray grad_bias, Array workspace,
                                      OptionalArray group_offsets, OptionalArray group_rows, OptionalArray steps,
                                      OptionalArray unowned_columns, OptionalArray grad_lse, std::uintptr_t stream) {
    require_cuda_build();
    CudaDevice device;
    Attention attention = check_attention(q, k, v, bias, row_offsets, col_indices, lse, device);
    const TransposedView transposed =
        transposed_arrays(attention.pattern, attention.nnz, t_row_offsets, t_col_indices, permutation, device);
    attention.layouts.out = out_layout(out, "out", q, attention, device);
    attention.layouts.grad_out = out_layout(grad_out, "grad_out", q, attention, device);
    check_like(grad_q, "grad_q", q, "q", device);
    check_like(grad_k, "grad_k", k, "k", device);
    check_like(grad_v, "grad_v", v, "v", device);
    if (grad_bias) {
      SPATTN_CHECK(bias.has_value(), "grad_bias must be None when bias is None");
      check_like(*grad_bias, "grad_bias", *bias, "bias", device);
    }
    if (grad_lse) check_like(*grad_lse, "grad_lse", lse, "lse", device);  // float32, contiguous
    check_layout(workspace, "workspace", 1, device);
    SPATTN_CHECK(workspace.dtype() == nb::dtype<float>(), "workspace must be float32");
    AttentionDims sizing = attention.dims;
    if (!grad_bias) sizing.bias_heads = 0;  // the bias gradient's partial sums are only needed when computed
    const index_t needed = cuda::attention_backward_workspace_size(attention.pattern, attention.nnz, sizing);
    SPATTN_CHECK(size(workspace, 0) >= needed, "workspace must have at least ", needed, " elements, got ",
                 size(workspace, 0));
    const GroupsView groups =
        device_groups(attention.pattern, group_offsets, group_rows, steps, unowned_columns, true, device);
    nb::gil_scoped_release release;
    dispatch(q, "q", [&](auto tag) {
      using T = decltype(tag);
      cuda::attention_backward(attention.pattern, transposed, groups, data<T>(q), data<T>(k), data<T>(v),
                               bias ? data<T>(*bias) : nullptr, data<T>(out), data<T>(grad_out), data<float>(lse),
                               grad_lse ? data<float>(*grad_lse) : nullptr, attention.dims, attention.layouts, scale,
                               data<T>(grad_q), data<T>(grad_k), data<T>(grad_v),
                               grad_bias ? data<T>(*grad_bias) : nullptr, data<float>(workspace), as_stream(stream));
    });
  }, nb::arg("grad_out"), nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("bias").none(), nb::arg("out"),
     nb::arg("lse"), nb::arg("row_offsets"), nb::arg("col_indices"), nb::arg("t_row_offsets"),
     nb::arg("t_col_indices"), nb::arg("permutation"), nb::arg("scale"), nb::arg("grad_q"), nb::arg("grad_k"),
     nb::arg("grad_v"), nb::arg("grad_bias").none(), nb::arg("workspace"), nb::arg("group_offsets").none(),
     nb::arg("group_rows").none(), nb::arg("steps").none(), nb::arg("unowned_columns").none(),
     nb::arg("grad_lse").none(), nb::arg("stream"));

  // Dynamic shared memory per block of the tensor-core kernel over the plan's schedule, in bytes (with a bias,
  // and for the backward its gradient): kernel "forward" or "backward", head dims 1 to 128, storage_bytes 2
  // (float16 / bfloat16: float32 has no tensor-core kernel). For benchmarks and reports.
  m.def("cuda_tensor_core_shared_bytes", [](const std::string& kernel, index_t head_dim, index_t value_dim,
                                            index_t storage_bytes) {
    require_cuda_build();
    SPATTN_CHECK(kernel == "forward" || kernel == "backward", "kernel must be 'forward' or 'backward', got '", kernel,
                 "'");
    SPATTN_CHECK(head_dim >= 1 && value_dim >= 1 && head_dim <= 128 && value_dim <= 128,
                 "head_dim and value_dim must be 1 to 128, got ", head_dim, " and ", value_dim);
    SPATTN_CHECK(storage_bytes == 2, "storage_bytes must be 2 (float16 or bfloat16), got ", storage_bytes);
    return cuda::tensor_core_shared_bytes(kernel == "backward", head_dim, value_dim, storage_bytes);
  }, nb::arg("kernel"), nb::arg("head_dim"), nb::arg("value_dim"), nb::arg("storage_bytes"));
}

}  // namespace spattn::python

// Bindings of the unfused CUDA kernels (SDDMM, sparse softmax, SpMM and their backward; the cuSPARSE
// baseline); the fused attention's are in bind_cuda_attention.cpp. Every array arrives through DLPack without a
// copy (torch allocated each output on the device); the dtype is dispatched at run time; kernels are
// enqueued on `stream` (torch.cuda.current_stream().cuda_stream) and nothing synchronises. The checks are
// cuda_arguments.hpp's: every shape, dtype, layout and device on the host first; the pattern's contents
// must come from a validated spattn.Pattern (columns < cols, the dense operand's row count). In a build
// without CUDA the functions exist and raise "spattn was built without CUDA support".

#include <cstdint>

#include "array_checks.hpp"
#include "arrays.hpp"
#include "cuda_arguments.hpp"
#include "spattn/spattn.hpp"

namespace spattn::python {

namespace {

using namespace cuda_arguments;

// The cuSPARSE path: float32 only.
void check_float32(const Array& array, const char* name) {
  SPATTN_CHECK(array.dtype() == nb::dtype<float>(), name, " must be float32 for the cuSPARSE backend");
}

struct Sddmm {
  CsrView pattern;
  index_t nnz, batch, dim;
};
// values: out (forward) or grad (backward), named values_name in errors.
Sddmm check_sddmm(const Array& a, const Array& b, const Array& row_offsets, const Array& col_indices,
                  const Array& values, const char* values_name, CudaDevice& device) {
  check_layout(a, "a", 3, device);
  check_dense(b, "b", a, "a", size(a, 0), device);
  check_size(b, "b", 2, size(a, 2), "a's last dimension");
  const CsrView pattern = csr_arrays(size(a, 1), size(b, 1), row_offsets, col_indices, device);
  check_values(values, values_name, a, "a", size(a, 0), nnz_of(col_indices), device);
  return {pattern, nnz_of(col_indices), size(a, 0), size(a, 2)};
}

struct Spmm {
  CsrView pattern;
  index_t nnz, batch, dim;
};
// out: out (forward) or grad_out (backward), named out_name in errors.
Spmm check_spmm(const Array& values, const Array& b, const Array& row_offsets, const Array& col_indices,
                const Array& out, const char* out_name, CudaDevice& device) {
  check_layout(b, "b", 3, device);
  check_layout(out, out_name, 3, device);
  check_same_dtype(out, out_name, b, "b");
  check_size(out, out_name, 0, size(b, 0), "the batch size");
  check_size(out, out_name, 2, size(b, 2), "b's last dimension");
  const CsrView pattern = csr_arrays(size(out, 1), size(b, 1), row_offsets, col_indices, device);
  check_values(values, "values", b, "b", size(b, 0), nnz_of(col_indices), device);
  return {pattern, nnz_of(col_indices), size(b, 0), size(b, 2)};
}

}  // namespace

void bind_cuda_kernels(nb::module_& m) {
  m.def("cuda_sddmm", [](Array a, Array b, Array row_offsets, Array col_indices, Array out, std::uintptr_t stream) {
    require_cuda_build();
    CudaDevice device;
    const Sddmm op = check_sddmm(a, b, row_offsets, col_indices, out, "out", device);
    nb::gil_scoped_release release;
    dispatch(a, "a", [&](auto tag) {
      using T = decltype(tag);
      cuda::sddmm(op.pattern, data<T>(a), data<T>(b), data<T>(out), op.batch, op.dim, as_stream(stream));
    });
  }, nb::arg("a"), nb::arg("b"), nb::arg("row_offsets"), nb::arg("col_indices"), nb::arg("out"), nb::arg("stream"));

  m.def("cuda_sddmm_backward",
        [](Array grad, Array a, Array b, Array row_offsets, Array col_indices, Array t_row_offsets, Array t_col_indices,
           Array permutation, Array grad_a, Array grad_b, std::uintptr_t stream) {
    require_cuda_build();
    CudaDevice device;
    const Sddmm op = check_sddmm(a, b, row_offsets, col_indices, grad, "grad", device);
    const TransposedView transposed =
        transposed_arrays(op.pattern, op.nnz, t_row_offsets, t_col_indices, permutation, device);
    check_like(grad_a, "grad_a", a, "a", device);
    check_like(grad_b, "grad_b", b, "b", device);
    nb::gil_scoped_release release;
    dispatch(a, "a", [&](auto tag) {
      using T = decltype(tag);
      cuda::sddmm_backward(op.pattern, transposed, data<T>(grad), data<T>(a), data<T>(b), data<T>(grad_a),
                           data<T>(grad_b), op.batch, op.dim, as_stream(stream));
    });
  },
        nb::arg("grad"), nb::arg("a"), nb::arg("b"), nb::arg("row_offsets"), nb::arg("col_indices"),
        nb::arg("t_row_offsets"), nb::arg("t_col_indices"), nb::arg("permutation"), nb::arg("grad_a"),
        nb::arg("grad_b"), nb::arg("stream"));

  // Softmax never reads column indices; any column count goes.
  m.def("cuda_sparse_softmax",
        [](Array values, Array row_offsets, Array col_indices, Array out, std::uintptr_t stream) {
    require_cuda_build();
    CudaDevice device;
    check_layout(values, "values", 2, device);
    check_like(out, "out", values, "values", device);
    SPATTN_CHECK(row_offsets.ndim() == 1 && row_offsets.shape(0) >= 1,
                 "row_offsets must be 1-D with rows + 1 >= 1 entries");
    const CsrView pattern = csr_arrays(size(row_offsets, 0) - 1, 0, row_offsets, col_indices, device);
    check_size(values, "values", 1, nnz_of(col_indices), "the pattern's nnz");
    nb::gil_scoped_release release;
    dispatch(values, "values", [&](auto tag) {
      using T = decltype(tag);
      cuda::sparse_softmax(pattern, data<T>(values), data<T>(out), size(values, 0), as_stream(stream));
    });
  }, nb::arg("values"), nb::arg("row_offsets"), nb::arg("col_indices"), nb::arg("out"), nb::arg("stream"));

  m.def("cuda_sparse_softmax_backward",
        [](Array grad, Array out, Array row_offsets, Array col_indices, Array grad_values, std::uintptr_t stream) {
    require_cuda_build();
    CudaDevice device;
    check_layout(out, "out", 2, device);
    check_like(grad, "grad", out, "out", device);
    check_like(grad_values, "grad_values", out, "out", device);
    SPATTN_CHECK(row_offsets.ndim() == 1 && row_offsets.shape(0) >= 1,
                 "row_offsets must be 1-D with rows + 1 >= 1 entries");
    const CsrView pattern = csr_arrays(size(row_offsets, 0) - 1, 0, row_offsets, col_indices, device);
    check_size(out, "out", 1, nnz_of(col_indices), "the pattern's nnz");
    nb::gil_scoped_release release;
    dispatch(out, "out", [&](auto tag) {
      using T = decltype(tag);
      cuda::sparse_softmax_backward(pattern, data<T>(grad), data<T>(out), data<T>(grad_values), size(out, 0),
                                    as_stream(stream));
    });
  }, nb::arg("grad"), nb::arg("out"), nb::arg("row_offsets"), nb::arg("col_indices"), nb::arg("grad_values"),
        nb::arg("stream"));

  m.def("cuda_spmm",
        [](Array values, Array b, Array row_offsets, Array col_indices, Array out, std::uintptr_t stream) {
    require_cuda_build();
    CudaDevice device;
    const Spmm op = check_spmm(values, b, row_offsets, col_indices, out, "out", device);
    nb::gil_scoped_release release;
    dispatch(b, "b", [&](auto tag) {
      using T = decltype(tag);
      cuda::spmm(op.pattern, data<T>(values), data<T>(b), data<T>(out), op.batch, op.dim, as_stream(stream));
    });
  }, nb::arg("values"), nb::arg("b"), nb::arg("row_offsets"), nb::arg("col_indices"), nb::arg("out"),
        nb::arg("stream"));

  m.def("cuda_spmm_backward",
        [](Array grad_out, Array values, Array b, Array row_offsets, Array col_indices, Array t_row_offsets,
           Array t_col_indices, Array permutation, Array grad_values, Array grad_b, std::uintptr_t stream) {
    require_cuda_build();
    CudaDevice device;
    const Spmm op = check_spmm(values, b, row_offsets, col_indices, grad_out, "grad_out", device);
    const TransposedView transposed =
        transposed_arrays(op.pattern, op.nnz, t_row_offsets, t_col_indices, permutation, device);
    check_like(grad_values, "grad_values", values, "values", device);
    check_like(grad_b, "grad_b", b, "b", device);
    nb::gil_scoped_release release;
    dispatch(b, "b", [&](auto tag) {
      using T = decltype(tag);
      cuda::spmm_backward(op.pattern, transposed, data<T>(grad_out), data<T>(values), data<T>(b), data<T>(grad_values),
                          data<T>(grad_b), op.batch, op.dim, as_stream(stream));
    });
  },
        nb::arg("grad_out"), nb::arg("values"), nb::arg("b"), nb::arg("row_offsets"), nb::arg("col_indices"),
        nb::arg("t_row_offsets"), nb::arg("t_col_indices"), nb::arg("permutation"), nb::arg("grad_values"),
        nb::arg("grad_b"), nb::arg("stream"));

  // ---- cuSPARSE baseline (float32). Workspace sizes in bytes; the workspace is any CUDA array that large.
  m.def("cusparse_sddmm_workspace_size", [](Array a, Array b, Array row_offsets, Array col_indices, Array out) {
    require_cuda_build();
    CudaDevice device;
    const Sddmm op = check_sddmm(a, b, row_offsets, col_indices, out, "out", device);
    check_float32(a, "a");
    nb::gil_scoped_release release;
    return cuda::cusparse_sddmm_workspace_size(op.pattern, op.nnz, data<float>(a), data<float>(b), data<float>(out),
                                               op.batch, op.dim);
  }, nb::arg("a"), nb::arg("b"), nb::arg("row_offsets"), nb::arg("col_indices"), nb::arg("out"));

  m.def("cusparse_sddmm",
        [](Array a, Array b, Array row_offsets, Array col_indices, Array out, Array workspace, std::uintptr_t stream) {
    require_cuda_build();
    CudaDevice device;
    const Sddmm op = check_sddmm(a, b, row_offsets, col_indices, out, "out", device);
    check_float32(a, "a");
    check_layout(workspace, "workspace", 1, device);
    nb::gil_scoped_release release;
    cuda::cusparse_sddmm(op.pattern, op.nnz, data<float>(a), data<float>(b), data<float>(out), op.batch, op.dim,
                         workspace.data(), workspace.nbytes(), as_stream(stream));
  }, nb::arg("a"), nb::arg("b"), nb::arg("row_offsets"), nb::arg("col_indices"), nb::arg("out"), nb::arg("workspace"),
        nb::arg("stream"));

  m.def("cusparse_spmm_workspace_size", [](Array values, Array b, Array row_offsets, Array col_indices, Array out) {
    require_cuda_build();
    CudaDevice device;
    const Spmm op = check_spmm(values, b, row_offsets, col_indices, out, "out", device);
    check_float32(b, "b");
    nb::gil_scoped_release release;
    return cuda::cusparse_spmm_workspace_size(op.pattern, op.nnz, data<float>(values), data<float>(b), data<float>(out),
                                              op.batch, op.dim);
  }, nb::arg("values"), nb::arg("b"), nb::arg("row_offsets"), nb::arg("col_indices"), nb::arg("out"));

  m.def("cusparse_spmm",
        [](Array values, Array b, Array row_offsets, Array col_indices, Array out, Array workspace,
           std::uintptr_t stream) {
    require_cuda_build();
    CudaDevice device;
    const Spmm op = check_spmm(values, b, row_offsets, col_indices, out, "out", device);
    check_float32(b, "b");
    check_layout(workspace, "workspace", 1, device);
    nb::gil_scoped_release release;
    cuda::cusparse_spmm(op.pattern, op.nnz, data<float>(values), data<float>(b), data<float>(out), op.batch, op.dim,
                        workspace.data(), workspace.nbytes(), as_stream(stream));
  },
        nb::arg("values"), nb::arg("b"), nb::arg("row_offsets"), nb::arg("col_indices"), nb::arg("out"),
        nb::arg("workspace"), nb::arg("stream"));
}

}  // namespace spattn::python

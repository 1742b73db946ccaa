// Bindings of the CUDA kernels (and the cuSPARSE baseline). Every array arrives through DLPack without a
// copy (torch allocated each output on the device); the dtype is dispatched at run time; kernels are
// enqueued on `stream` (torch.cuda.current_stream().cuda_stream) and nothing synchronises.
//
// Every shape, dtype, layout and device is checked on the host first, so that no size a caller passes can
// make a kernel read or write out of bounds. The pattern's contents (offsets, column indices, the
// permutation) live on the device and are not re-read here (that would synchronise): they must come from a
// validated spattn.Pattern, whose columns are < cols, the dense operand's row count. Errors are
// spattn::Error (ValueError in Python) naming the argument. In a build without CUDA the functions exist
// and raise "spattn was built without CUDA support".

#include <nanobind/stl/optional.h>

#include <cstdint>
#include <optional>
#include <string>

#include "array_checks.hpp"
#include "arrays.hpp"
#include "spattn/spattn.hpp"

namespace spattn::python {

namespace {

void require_cuda_build() {
  SPATTN_CHECK(build_info().cuda, "spattn was built without CUDA support");
}

cudaStream_t as_stream(std::uintptr_t stream) { return reinterpret_cast<cudaStream_t>(stream); }

// All arrays of one call sit on the CUDA device of its first array.
struct Device {
  int id = -1;
};

// On the CUDA device, of the given rank, C-contiguous (strides of size-1 axes do not matter).
void check_layout(const Array& array, const char* name, std::size_t ndim, Device& device) {
  SPATTN_CHECK(array.device_type() == nb::device::cuda::value, name, " must be on a CUDA device");
  if (device.id < 0) device.id = array.device_id();
  SPATTN_CHECK(array.device_id() == device.id, name, " is on cuda:", array.device_id(),
               " but the other arguments are on cuda:", device.id);
  check_rank_and_contiguity(array, name, ndim);
}

const index_t* indices(const Array& array, const char* name, Device& device) {
  check_layout(array, name, 1, device);
  SPATTN_CHECK(array.dtype() == nb::dtype<std::int64_t>(), name, " must be int64");
  return static_cast<const index_t*>(array.data());
}

// The pattern's shape from the arrays' sizes: row_offsets has rows + 1 entries, col_indices nnz.
CsrView device_pattern(index_t rows, index_t cols, const Array& row_offsets, const Array& col_indices,
                       Device& device, const char* prefix = "") {
  const std::string offsets_name = std::string(prefix) + "row_offsets";
  const std::string columns_name = std::string(prefix) + "col_indices";
  const CsrView view{rows, cols, indices(row_offsets, offsets_name.c_str(), device),
                     indices(col_indices, columns_name.c_str(), device)};
  SPATTN_CHECK(size(row_offsets, 0) == rows + 1, offsets_name, " must have ", rows + 1,
               " entries (rows + 1, rows taken from the dense operand), got ", size(row_offsets, 0));
  return view;
}

index_t nnz_of(const Array& col_indices) { return size(col_indices, 0); }

TransposedView device_transposed(CsrView pattern, index_t nnz, const Array& t_row_offsets, const Array& t_col_indices,
                                 const Array& permutation, Device& device) {
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

void check_dense(const Array& array, const char* name, const Array& first, const char* first_name, index_t batch,
                 Device& device) {
  check_layout(array, name, 3, device);
  check_same_dtype(array, name, first, first_name);
  check_size(array, name, 0, batch, "the batch size");
}

void check_values(const Array& array, const char* name, const Array& first, const char* first_name, index_t batch,
                  index_t nnz, Device& device) {
  check_layout(array, name, 2, device);
  check_same_dtype(array, name, first, first_name);
  check_size(array, name, 0, batch, "the batch size");
  check_size(array, name, 1, nnz, "the pattern's nnz");
}

void check_like(const Array& array, const char* name, const Array& like, const char* like_name, Device& device) {
  check_layout(array, name, like.ndim(), device);
  check_same_dtype(array, name, like, like_name);
  for (std::size_t axis = 0; axis < like.ndim(); ++axis) check_size(array, name, axis, size(like, axis), like_name);
}

struct Attention {
  CsrView pattern;
  index_t nnz;
  AttentionDims dims;
};

// q [batch, rows, D], k [batch, cols, D], v [batch, cols, Dv], bias [bias_heads, nnz] or None, lse [batch, rows]
// float32.
Attention check_attention(const Array& q, const Array& k, const Array& v, const OptionalArray& bias,
                          const Array& row_offsets, const Array& col_indices, const Array& lse, Device& device) {
  check_layout(q, "q", 3, device);
  check_dense(k, "k", q, "q", size(q, 0), device);
  check_dense(v, "v", q, "q", size(q, 0), device);
  check_size(k, "k", 2, size(q, 2), "q's head dim");
  check_size(v, "v", 1, size(k, 1), "k's number of keys");
  check_layout(lse, "lse", 2, device);
  check_size(lse, "lse", 0, size(q, 0), "the batch size");
  check_size(lse, "lse", 1, size(q, 1), "the number of queries");
  SPATTN_CHECK(lse.dtype() == nb::dtype<float>(), "lse must be float32");
  const CsrView pattern = device_pattern(size(q, 1), size(k, 1), row_offsets, col_indices, device);
  const index_t nnz = nnz_of(col_indices);
  AttentionDims dims{size(q, 0), size(q, 2), size(v, 2), 0};
  SPATTN_CHECK(dims.head_dim <= cuda::max_attention_dim && dims.value_dim <= cuda::max_attention_dim,
               "q and v: head dims up to ", cuda::max_attention_dim, " are supported on CUDA, got ", dims.head_dim,
               " and ", dims.value_dim);
  if (bias) {
    check_layout(*bias, "bias", 2, device);
    check_same_dtype(*bias, "bias", q, "q");
    check_size(*bias, "bias", 1, nnz, "the pattern's nnz");
    SPATTN_CHECK(size(*bias, 0) >= 1, "bias must have at least one head, got shape ", shape_of(*bias));
    dims.bias_heads = size(*bias, 0);
  }
  return Attention{pattern, nnz, dims};
}

void check_attention_out(const Array& out, const char* name, const Array& q, const Array& v, Device& device) {
  check_dense(out, name, q, "q", size(q, 0), device);
  check_size(out, name, 1, size(q, 1), "the number of queries");
  check_size(out, name, 2, size(v, 2), "v's last dimension");
}

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
                  const Array& values, const char* values_name, Device& device) {
  check_layout(a, "a", 3, device);
  check_dense(b, "b", a, "a", size(a, 0), device);
  check_size(b, "b", 2, size(a, 2), "a's last dimension");
  const CsrView pattern = device_pattern(size(a, 1), size(b, 1), row_offsets, col_indices, device);
  check_values(values, values_name, a, "a", size(a, 0), nnz_of(col_indices), device);
  return {pattern, nnz_of(col_indices), size(a, 0), size(a, 2)};
}

struct Spmm {
  CsrView pattern;
  index_t nnz, batch, dim;
};
// out: out (forward) or grad_out (backward), named out_name in errors.
Spmm check_spmm(const Array& values, const Array& b, const Array& row_offsets, const Array& col_indices,
                const Array& out, const char* out_name, Device& device) {
  check_layout(b, "b", 3, device);
  check_layout(out, out_name, 3, device);
  check_same_dtype(out, out_name, b, "b");
  check_size(out, out_name, 0, size(b, 0), "the batch size");
  check_size(out, out_name, 2, size(b, 2), "b's last dimension");
  const CsrView pattern = device_pattern(size(out, 1), size(b, 1), row_offsets, col_indices, device);
  check_values(values, "values", b, "b", size(b, 0), nnz_of(col_indices), device);
  return {pattern, nnz_of(col_indices), size(b, 0), size(b, 2)};
}

}  // namespace

void bind_cuda_kernels(nb::module_& m) {
  m.def("cuda_sddmm", [](Array a, Array b, Array row_offsets, Array col_indices, Array out, std::uintptr_t stream) {
    require_cuda_build();
    Device device;
    const Sddmm op = check_sddmm(a, b, row_offsets, col_indices, out, "out", device);
    nb::gil_scoped_release release;
    dispatch(a, "a", [&](auto tag) {
      using T = decltype(tag);
      cuda::sddmm(op.pattern, data<T>(a), data<T>(b), data<T>(out), op.batch, op.dim, as_stream(stream));
    });
  }, nb::arg("a"), nb::arg("b"), nb::arg("row_offsets"), nb::arg("col_indices"), nb::arg("out"), nb::arg("stream"));

  m.def("cuda_sddmm_backward", [](Array grad, Array a, Array b, Array row_offsets, Array col_indices,
                                  Array t_row_offsets, Array t_col_indices, Array permutation, Array grad_a,
                                  Array grad_b, std::uintptr_t stream) {
    require_cuda_build();
    Device device;
    const Sddmm op = check_sddmm(a, b, row_offsets, col_indices, grad, "grad", device);
    const TransposedView transposed =
        device_transposed(op.pattern, op.nnz, t_row_offsets, t_col_indices, permutation, device);
    check_like(grad_a, "grad_a", a, "a", device);
    check_like(grad_b, "grad_b", b, "b", device);
    nb::gil_scoped_release release;
    dispatch(a, "a", [&](auto tag) {
      using T = decltype(tag);
      cuda::sddmm_backward(op.pattern, transposed, data<T>(grad), data<T>(a), data<T>(b), data<T>(grad_a),
                           data<T>(grad_b), op.batch, op.dim, as_stream(stream));
    });
  }, nb::arg("grad"), nb::arg("a"), nb::arg("b"), nb::arg("row_offsets"), nb::arg("col_indices"),
     nb::arg("t_row_offsets"), nb::arg("t_col_indices"), nb::arg("permutation"), nb::arg("grad_a"), nb::arg("grad_b"),
     nb::arg("stream"));

  // Softmax never reads column indices; any column count goes.
  m.def("cuda_sparse_softmax", [](Array values, Array row_offsets, Array col_indices, Array out,
                                  std::uintptr_t stream) {
    require_cuda_build();
    Device device;
    check_layout(values, "values", 2, device);
    check_like(out, "out", values, "values", device);
    SPATTN_CHECK(row_offsets.ndim() == 1 && row_offsets.shape(0) >= 1, "row_offsets must be 1-D with rows + 1 >= 1 entries");
    const CsrView pattern = device_pattern(size(row_offsets, 0) - 1, 0, row_offsets, col_indices, device);
    check_size(values, "values", 1, nnz_of(col_indices), "the pattern's nnz");
    nb::gil_scoped_release release;
    dispatch(values, "values", [&](auto tag) {
      using T = decltype(tag);
      cuda::sparse_softmax(pattern, data<T>(values), data<T>(out), size(values, 0), as_stream(stream));
    });
  }, nb::arg("values"), nb::arg("row_offsets"), nb::arg("col_indices"), nb::arg("out"), nb::arg("stream"));

  m.def("cuda_sparse_softmax_backward", [](Array grad, Array out, Array row_offsets, Array col_indices,
                                           Array grad_values, std::uintptr_t stream) {
    require_cuda_build();
    Device device;
    check_layout(out, "out", 2, device);
    check_like(grad, "grad", out, "out", device);
    check_like(grad_values, "grad_values", out, "out", device);
    SPATTN_CHECK(row_offsets.ndim() == 1 && row_offsets.shape(0) >= 1, "row_offsets must be 1-D with rows + 1 >= 1 entries");
    const CsrView pattern = device_pattern(size(row_offsets, 0) - 1, 0, row_offsets, col_indices, device);
    check_size(out, "out", 1, nnz_of(col_indices), "the pattern's nnz");
    nb::gil_scoped_release release;
    dispatch(out, "out", [&](auto tag) {
      using T = decltype(tag);
      cuda::sparse_softmax_backward(pattern, data<T>(grad), data<T>(out), data<T>(grad_values), size(out, 0),
                                    as_stream(stream));
    });
  }, nb::arg("grad"), nb::arg("out"), nb::arg("row_offsets"), nb::arg("col_indices"), nb::arg("grad_values"),
     nb::arg("stream"));

  m.def("cuda_spmm", [](Array values, Array b, Array row_offsets, Array col_indices, Array out, std::uintptr_t stream) {
    require_cuda_build();
    Device device;
    const Spmm op = check_spmm(values, b, row_offsets, col_indices, out, "out", device);
    nb::gil_scoped_release release;
    dispatch(b, "b", [&](auto tag) {
      using T = decltype(tag);
      cuda::spmm(op.pattern, data<T>(values), data<T>(b), data<T>(out), op.batch, op.dim, as_stream(stream));
    });
  }, nb::arg("values"), nb::arg("b"), nb::arg("row_offsets"), nb::arg("col_indices"), nb::arg("out"),
     nb::arg("stream"));

  m.def("cuda_spmm_backward", [](Array grad_out, Array values, Array b, Array row_offsets, Array col_indices,
                                 Array t_row_offsets, Array t_col_indices, Array permutation, Array grad_values,
                                 Array grad_b, std::uintptr_t stream) {
    require_cuda_build();
    Device device;
    const Spmm op = check_spmm(values, b, row_offsets, col_indices, grad_out, "grad_out", device);
    const TransposedView transposed =
        device_transposed(op.pattern, op.nnz, t_row_offsets, t_col_indices, permutation, device);
    check_like(grad_values, "grad_values", values, "values", device);
    check_like(grad_b, "grad_b", b, "b", device);
    nb::gil_scoped_release release;
    dispatch(b, "b", [&](auto tag) {
      using T = decltype(tag);
      cuda::spmm_backward(op.pattern, transposed, data<T>(grad_out), data<T>(values), data<T>(b),
                          data<T>(grad_values), data<T>(grad_b), op.batch, op.dim, as_stream(stream));
    });
  }, nb::arg("grad_out"), nb::arg("values"), nb::arg("b"), nb::arg("row_offsets"), nb::arg("col_indices"),
     nb::arg("t_row_offsets"), nb::arg("t_col_indices"), nb::arg("permutation"), nb::arg("grad_values"),
     nb::arg("grad_b"), nb::arg("stream"));

  m.def("cuda_attention_forward", [](Array q, Array k, Array v, OptionalArray bias, Array row_offsets,
                                     Array col_indices, double scale, Array out, Array lse, std::uintptr_t stream) {
    require_cuda_build();
    Device device;
    const Attention attention = check_attention(q, k, v, bias, row_offsets, col_indices, lse, device);
    check_attention_out(out, "out", q, v, device);
    nb::gil_scoped_release release;
    dispatch(q, "q", [&](auto tag) {
      using T = decltype(tag);
      cuda::attention_forward(attention.pattern, data<T>(q), data<T>(k), data<T>(v),
                              bias ? data<T>(*bias) : nullptr, attention.dims, scale, data<T>(out),
                              data<float>(lse), as_stream(stream));
    });
  }, nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("bias").none(), nb::arg("row_offsets"),
     nb::arg("col_indices"), nb::arg("scale"), nb::arg("out"), nb::arg("lse"), nb::arg("stream"));

  // In float32 elements; bias_heads = 0 when no bias gradient is computed.
  m.def("cuda_attention_backward_workspace_size", [](index_t batch, index_t rows, index_t nnz, index_t bias_heads) {
    require_cuda_build();
    SPATTN_CHECK(batch >= 0 && rows >= 0 && nnz >= 0 && bias_heads >= 0, "sizes must be non-negative");
    return cuda::attention_backward_workspace_size(CsrView{rows, 0, nullptr, nullptr}, nnz,
                                                   AttentionDims{batch, 0, 0, bias_heads});
  }, nb::arg("batch"), nb::arg("rows"), nb::arg("nnz"), nb::arg("bias_heads"));

  m.def("cuda_attention_backward", [](Array grad_out, Array q, Array k, Array v, OptionalArray bias, Array out,
                                      Array lse, Array row_offsets, Array col_indices, Array t_row_offsets,
                                      Array t_col_indices, Array permutation, double scale, Array grad_q,
                                      Array grad_k, Array grad_v, OptionalArray grad_bias, Array workspace,
                                      OptionalArray group_offsets, OptionalArray group_rows, std::uintptr_t stream) {
    require_cuda_build();
    Device device;
    const Attention attention = check_attention(q, k, v, bias, row_offsets, col_indices, lse, device);
    const TransposedView transposed =
        device_transposed(attention.pattern, attention.nnz, t_row_offsets, t_col_indices, permutation, device);
    check_attention_out(out, "out", q, v, device);
    check_like(grad_out, "grad_out", out, "out", device);
    check_like(grad_q, "grad_q", q, "q", device);
    check_like(grad_k, "grad_k", k, "k", device);
    check_like(grad_v, "grad_v", v, "v", device);
    if (grad_bias) {
      SPATTN_CHECK(bias.has_value(), "grad_bias must be None when bias is None");
      check_like(*grad_bias, "grad_bias", *bias, "bias", device);
    }
    check_layout(workspace, "workspace", 1, device);
    SPATTN_CHECK(workspace.dtype() == nb::dtype<float>(), "workspace must be float32");
    AttentionDims sizing = attention.dims;
    if (!grad_bias) sizing.bias_heads = 0;  // the bias gradient's partial sums are only needed when computed
    const index_t needed = cuda::attention_backward_workspace_size(attention.pattern, attention.nnz, sizing);
    SPATTN_CHECK(size(workspace, 0) >= needed, "workspace must have at least ", needed, " elements, got ",
                 size(workspace, 0));
    // The execution plan (optional): group_offsets [groups + 1], group_rows [rows], both or neither.
    SPATTN_CHECK(group_offsets.has_value() == group_rows.has_value(),
                 "group_offsets and group_rows must be given together");
    GroupsView groups;
    if (group_offsets) {
      groups.group_offsets = indices(*group_offsets, "group_offsets", device);
      SPATTN_CHECK(size(*group_offsets, 0) >= 1, "group_offsets must have groups + 1 >= 1 entries, got 0");
      groups.groups = size(*group_offsets, 0) - 1;
      groups.group_rows = indices(*group_rows, "group_rows", device);
      SPATTN_CHECK(size(*group_rows, 0) == attention.pattern.rows, "group_rows must have ", attention.pattern.rows,
                   " entries (every row in one group), got ", size(*group_rows, 0));
    }
    nb::gil_scoped_release release;
    dispatch(q, "q", [&](auto tag) {
      using T = decltype(tag);
      cuda::attention_backward(attention.pattern, transposed, groups, data<T>(q), data<T>(k), data<T>(v),
                               bias ? data<T>(*bias) : nullptr, data<T>(out), data<T>(grad_out), data<float>(lse),
                               attention.dims, scale, data<T>(grad_q), data<T>(grad_k), data<T>(grad_v),
                               grad_bias ? data<T>(*grad_bias) : nullptr, data<float>(workspace), as_stream(stream));
    });
  }, nb::arg("grad_out"), nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("bias").none(), nb::arg("out"),
     nb::arg("lse"), nb::arg("row_offsets"), nb::arg("col_indices"), nb::arg("t_row_offsets"),
     nb::arg("t_col_indices"), nb::arg("permutation"), nb::arg("scale"), nb::arg("grad_q"), nb::arg("grad_k"),
     nb::arg("grad_v"), nb::arg("grad_bias").none(), nb::arg("workspace"), nb::arg("group_offsets").none(),
     nb::arg("group_rows").none(), nb::arg("stream"));

  // ---- cuSPARSE baseline (float32). Workspace sizes in bytes; the workspace is any CUDA array that large.
  m.def("cusparse_sddmm_workspace_size", [](Array a, Array b, Array row_offsets, Array col_indices, Array out) {
    require_cuda_build();
    Device device;
    const Sddmm op = check_sddmm(a, b, row_offsets, col_indices, out, "out", device);
    check_float32(a, "a");
    nb::gil_scoped_release release;
    return cuda::cusparse_sddmm_workspace_size(op.pattern, op.nnz, data<float>(a), data<float>(b), data<float>(out),
                                               op.batch, op.dim);
  }, nb::arg("a"), nb::arg("b"), nb::arg("row_offsets"), nb::arg("col_indices"), nb::arg("out"));

  m.def("cusparse_sddmm", [](Array a, Array b, Array row_offsets, Array col_indices, Array out, Array workspace,
                             std::uintptr_t stream) {
    require_cuda_build();
    Device device;
    const Sddmm op = check_sddmm(a, b, row_offsets, col_indices, out, "out", device);
    check_float32(a, "a");
    check_layout(workspace, "workspace", 1, device);
    nb::gil_scoped_release release;
    cuda::cusparse_sddmm(op.pattern, op.nnz, data<float>(a), data<float>(b), data<float>(out), op.batch, op.dim,
                         workspace.data(), workspace.nbytes(), as_stream(stream));
  }, nb::arg("a"), nb::arg("b"), nb::arg("row_offsets"), nb::arg("col_indices"), nb::arg("out"),
     nb::arg("workspace"), nb::arg("stream"));

  m.def("cusparse_spmm_workspace_size", [](Array values, Array b, Array row_offsets, Array col_indices, Array out) {
    require_cuda_build();
    Device device;
    const Spmm op = check_spmm(values, b, row_offsets, col_indices, out, "out", device);
    check_float32(b, "b");
    nb::gil_scoped_release release;
    return cuda::cusparse_spmm_workspace_size(op.pattern, op.nnz, data<float>(values), data<float>(b),
                                              data<float>(out), op.batch, op.dim);
  }, nb::arg("values"), nb::arg("b"), nb::arg("row_offsets"), nb::arg("col_indices"), nb::arg("out"));

  m.def("cusparse_spmm", [](Array values, Array b, Array row_offsets, Array col_indices, Array out, Array workspace,
                            std::uintptr_t stream) {
    require_cuda_build();
    Device device;
    const Spmm op = check_spmm(values, b, row_offsets, col_indices, out, "out", device);
    check_float32(b, "b");
    check_layout(workspace, "workspace", 1, device);
    nb::gil_scoped_release release;
    cuda::cusparse_spmm(op.pattern, op.nnz, data<float>(values), data<float>(b), data<float>(out), op.batch, op.dim,
                        workspace.data(), workspace.nbytes(), as_stream(stream));
  }, nb::arg("values"), nb::arg("b"), nb::arg("row_offsets"), nb::arg("col_indices"), nb::arg("out"),
     nb::arg("workspace"), nb::arg("stream"));
}

}  // namespace spattn::python

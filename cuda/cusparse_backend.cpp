// The cuSPARSE backend (SDDMM / SpMM through the vendor library, a baseline for the custom kernels).
//
// cuSPARSE's strided batches give column indices and values one shared stride, so problems that share a
// pattern but not values cannot be one batched call without copying the indices per problem; we issue one
// call per problem instead, re-pointing the descriptors between calls. Everything is enqueued on the
// caller's stream with the caller's workspace: no allocation, no synchronisation (graph capture works).
// cuSPARSE is called through the library loaded on first use (cusparse_library.hpp): every entry point
// starts by asking for it, so that without cuSPARSE each one fails alike, with a message saying what is missing.

#include <unordered_map>

#include "cusparse_library.hpp"
#include "launch_check.hpp"
#include "spattn/cuda.hpp"
#include "spattn/cuda_kernels.hpp"

#define SPATTN_CUSPARSE_CHECK(expression)                                                             \
  do {                                                                                                \
    const cusparseStatus_t spattn_status_ = (expression);                                             \
    SPATTN_CHECK(spattn_status_ == CUSPARSE_STATUS_SUCCESS, "cuSPARSE error in ", #expression, ": ",  \
                 cusparse_library().GetErrorString(spattn_status_));                                  \
  } while (false)

namespace spattn::cuda {

// 0 also when the library cannot be loaded now: build_info() reports that rather than throwing.
int cusparse_version() {
  const CusparseLibrary* cusparse = try_load_cusparse();
  if (cusparse == nullptr) return 0;
  int major = 0, minor = 0, patch = 0;
  cusparse->GetProperty(MAJOR_VERSION, &major);
  cusparse->GetProperty(MINOR_VERSION, &minor);
  cusparse->GetProperty(PATCH_LEVEL, &patch);
  return major * 1000 + minor * 100 + patch;
}

namespace {

// One handle per (host thread, device), created on first use. Handles are deliberately never destroyed:
// at process exit thread_local destructors may run after the CUDA context is gone.
cusparseHandle_t handle_for_current_device() {
  thread_local std::unordered_map<int, cusparseHandle_t> handles;
  int device = 0;
  SPATTN_CUDA_CHECK(cudaGetDevice(&device));
  auto found = handles.find(device);
  if (found != handles.end()) return found->second;
  cusparseHandle_t handle = nullptr;
  SPATTN_CUSPARSE_CHECK(cusparse_library().Create(&handle));
  handles.emplace(device, handle);
  return handle;
}

// Descriptors for one problem of the batch, destroyed on scope exit (also when a check throws).
struct Descriptors {
  cusparseSpMatDescr_t sparse = nullptr;
  cusparseDnMatDescr_t first = nullptr;   // a (SDDMM) or b (SpMM)
  cusparseDnMatDescr_t second = nullptr;  // b (SDDMM) or out (SpMM)
  Descriptors() = default;
  Descriptors(const Descriptors&) = delete;
  Descriptors& operator=(const Descriptors&) = delete;
  ~Descriptors() {
    // Only ever non-null when the library is loaded.
    if (sparse != nullptr) cusparse_library().DestroySpMat(sparse);
    if (first != nullptr) cusparse_library().DestroyDnMat(first);
    if (second != nullptr) cusparse_library().DestroyDnMat(second);
  }
};

void check_sizes(CsrView pattern, index_t nnz, index_t batch, index_t dim, const char* op) {
  SPATTN_CHECK(pattern.rows >= 0 && pattern.cols >= 0 && nnz >= 0 && batch >= 0 && dim >= 0, op,
               ": negative size");
}

// The CSR matrix of problem 0; values are re-pointed per problem.
void create_sparse(Descriptors& descriptors, CsrView pattern, index_t nnz, const float* values) {
  SPATTN_CUSPARSE_CHECK(cusparse_library().CreateCsr(
      &descriptors.sparse, pattern.rows, pattern.cols, nnz, const_cast<index_t*>(pattern.row_offsets),
      const_cast<index_t*>(pattern.col_indices), const_cast<float*>(values), CUSPARSE_INDEX_64I, CUSPARSE_INDEX_64I,
      CUSPARSE_INDEX_BASE_ZERO, CUDA_R_32F));
}

// SDDMM: out = (a @ b^T) on the pattern, with a [rows, dim] and b [cols, dim] row-major (b used transposed).
void describe_sddmm(Descriptors& descriptors, CsrView pattern, index_t nnz, const float* a, const float* b,
                    float* out, index_t dim) {
  const CusparseLibrary& cusparse = cusparse_library();
  create_sparse(descriptors, pattern, nnz, out);
  SPATTN_CUSPARSE_CHECK(cusparse.CreateDnMat(&descriptors.first, pattern.rows, dim, dim, const_cast<float*>(a),
                                             CUDA_R_32F, CUSPARSE_ORDER_ROW));
  SPATTN_CUSPARSE_CHECK(cusparse.CreateDnMat(&descriptors.second, pattern.cols, dim, dim, const_cast<float*>(b),
                                             CUDA_R_32F, CUSPARSE_ORDER_ROW));
}

// SpMM: out [rows, dim] = values (CSR) @ b [cols, dim], row-major.
void describe_spmm(Descriptors& descriptors, CsrView pattern, index_t nnz, const float* values, const float* b,
                   float* out, index_t dim) {
  const CusparseLibrary& cusparse = cusparse_library();
  create_sparse(descriptors, pattern, nnz, values);
  SPATTN_CUSPARSE_CHECK(cusparse.CreateDnMat(&descriptors.first, pattern.cols, dim, dim, const_cast<float*>(b),
                                             CUDA_R_32F, CUSPARSE_ORDER_ROW));
  SPATTN_CUSPARSE_CHECK(
      cusparse.CreateDnMat(&descriptors.second, pattern.rows, dim, dim, out, CUDA_R_32F, CUSPARSE_ORDER_ROW));
}

constexpr float kOne = 1.f, kZero = 0.f;

// cuSPARSE rejects empty operands; these cases are answered without it.
bool sddmm_is_trivial(CsrView pattern, index_t nnz, index_t batch, index_t dim) {
  return batch == 0 || nnz == 0 || pattern.rows == 0 || pattern.cols == 0 || dim == 0;
}
bool spmm_is_trivial(CsrView pattern, index_t nnz, index_t batch, index_t dim) {
  return batch == 0 || nnz == 0 || pattern.rows == 0 || pattern.cols == 0 || dim == 0;
}

}  // namespace

std::size_t cusparse_sddmm_workspace_size(CsrView pattern, index_t nnz, const float* a, const float* b, float* out,
                                          index_t batch, index_t dim) {
  const CusparseLibrary& cusparse = cusparse_library();
  check_sizes(pattern, nnz, batch, dim, "cusparse_sddmm");
  if (sddmm_is_trivial(pattern, nnz, batch, dim)) return 0;
  cusparseHandle_t handle = handle_for_current_device();
  Descriptors descriptors;
  describe_sddmm(descriptors, pattern, nnz, a, b, out, dim);
  std::size_t bytes = 0;
  SPATTN_CUSPARSE_CHECK(cusparse.SDDMM_bufferSize(handle, CUSPARSE_OPERATION_NON_TRANSPOSE,
                                                  CUSPARSE_OPERATION_TRANSPOSE, &kOne, descriptors.first,
                                                  descriptors.second, &kZero, descriptors.sparse, CUDA_R_32F,
                                                  CUSPARSE_SDDMM_ALG_DEFAULT, &bytes));
  return bytes;
}

void cusparse_sddmm(CsrView pattern, index_t nnz, const float* a, const float* b, float* out, index_t batch,
                    index_t dim, void* workspace, std::size_t workspace_bytes, cudaStream_t stream) {
  const CusparseLibrary& cusparse = cusparse_library();
  check_sizes(pattern, nnz, batch, dim, "cusparse_sddmm");
  if (sddmm_is_trivial(pattern, nnz, batch, dim)) {
    // Empty products are zero.
    if (nnz > 0 && batch > 0) {
      SPATTN_CUDA_CHECK(cudaMemsetAsync(out, 0, sizeof(float) * static_cast<std::size_t>(batch * nnz), stream));
    }
    return;
  }
  const std::size_t needed = cusparse_sddmm_workspace_size(pattern, nnz, a, b, out, batch, dim);
  SPATTN_CHECK(workspace_bytes >= needed && (needed == 0 || workspace != nullptr), "cusparse_sddmm: workspace has ",
               workspace_bytes, " bytes, needs ", needed);
  cusparseHandle_t handle = handle_for_current_device();
  SPATTN_CUSPARSE_CHECK(cusparse.SetStream(handle, stream));
  Descriptors descriptors;
  describe_sddmm(descriptors, pattern, nnz, a, b, out, dim);
  for (index_t problem = 0; problem < batch; ++problem) {
    SPATTN_CUSPARSE_CHECK(
        cusparse.DnMatSetValues(descriptors.first, const_cast<float*>(a + problem * pattern.rows * dim)));
    SPATTN_CUSPARSE_CHECK(
        cusparse.DnMatSetValues(descriptors.second, const_cast<float*>(b + problem * pattern.cols * dim)));
    SPATTN_CUSPARSE_CHECK(cusparse.CsrSetPointers(descriptors.sparse, const_cast<index_t*>(pattern.row_offsets),
                                                  const_cast<index_t*>(pattern.col_indices), out + problem * nnz));
    SPATTN_CUSPARSE_CHECK(cusparse.SDDMM(handle, CUSPARSE_OPERATION_NON_TRANSPOSE, CUSPARSE_OPERATION_TRANSPOSE, &kOne,
                                         descriptors.first, descriptors.second, &kZero, descriptors.sparse,
                                         CUDA_R_32F, CUSPARSE_SDDMM_ALG_DEFAULT, workspace));
  }
}

std::size_t cusparse_spmm_workspace_size(CsrView pattern, index_t nnz, const float* values, const float* b,
                                         float* out, index_t batch, index_t dim) {
  const CusparseLibrary& cusparse = cusparse_library();
  check_sizes(pattern, nnz, batch, dim, "cusparse_spmm");
  if (spmm_is_trivial(pattern, nnz, batch, dim)) return 0;
  cusparseHandle_t handle = handle_for_current_device();
  Descriptors descriptors;
  describe_spmm(descriptors, pattern, nnz, values, b, out, dim);
  std::size_t bytes = 0;
  SPATTN_CUSPARSE_CHECK(cusparse.SpMM_bufferSize(handle, CUSPARSE_OPERATION_NON_TRANSPOSE,
                                                 CUSPARSE_OPERATION_NON_TRANSPOSE, &kOne, descriptors.sparse,
                                                 descriptors.first, &kZero, descriptors.second, CUDA_R_32F,
                                                 CUSPARSE_SPMM_ALG_DEFAULT, &bytes));
  return bytes;
}

void cusparse_spmm(CsrView pattern, index_t nnz, const float* values, const float* b, float* out, index_t batch,
                   index_t dim, void* workspace, std::size_t workspace_bytes, cudaStream_t stream) {
  const CusparseLibrary& cusparse = cusparse_library();
  check_sizes(pattern, nnz, batch, dim, "cusparse_spmm");
  if (spmm_is_trivial(pattern, nnz, batch, dim)) {
    // No entries (or nothing to multiply): every output row is zero.
    const index_t count = batch * pattern.rows * dim;
    if (count > 0) SPATTN_CUDA_CHECK(cudaMemsetAsync(out, 0, sizeof(float) * static_cast<std::size_t>(count), stream));
    return;
  }
  const std::size_t needed = cusparse_spmm_workspace_size(pattern, nnz, values, b, out, batch, dim);
  SPATTN_CHECK(workspace_bytes >= needed && (needed == 0 || workspace != nullptr), "cusparse_spmm: workspace has ",
               workspace_bytes, " bytes, needs ", needed);
  cusparseHandle_t handle = handle_for_current_device();
  SPATTN_CUSPARSE_CHECK(cusparse.SetStream(handle, stream));
  Descriptors descriptors;
  describe_spmm(descriptors, pattern, nnz, values, b, out, dim);
  for (index_t problem = 0; problem < batch; ++problem) {
    SPATTN_CUSPARSE_CHECK(cusparse.CsrSetPointers(descriptors.sparse, const_cast<index_t*>(pattern.row_offsets),
                                                  const_cast<index_t*>(pattern.col_indices),
                                                  const_cast<float*>(values + problem * nnz)));
    SPATTN_CUSPARSE_CHECK(
        cusparse.DnMatSetValues(descriptors.first, const_cast<float*>(b + problem * pattern.cols * dim)));
    SPATTN_CUSPARSE_CHECK(cusparse.DnMatSetValues(descriptors.second, out + problem * pattern.rows * dim));
    SPATTN_CUSPARSE_CHECK(cusparse.SpMM(handle, CUSPARSE_OPERATION_NON_TRANSPOSE, CUSPARSE_OPERATION_NON_TRANSPOSE,
                                        &kOne, descriptors.sparse, descriptors.first, &kZero, descriptors.second,
                                        CUDA_R_32F, CUSPARSE_SPMM_ALG_DEFAULT, workspace));
  }
}

}  // namespace spattn::cuda

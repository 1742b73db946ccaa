// Host-side sizing for the fused attention backward (kept out of the .cu files: host code only).

#include "attention_workspace.hpp"
#include "spattn/cuda_kernels.hpp"

namespace spattn::cuda {

index_t attention_backward_workspace_size(CsrView pattern, index_t nnz, AttentionDims dims) {
  SPATTN_CHECK(dims.batch >= 0 && pattern.rows >= 0 && pattern.cols >= 0 && nnz >= 0 && dims.bias_heads >= 0 &&
                   dims.head_dim >= 0 && dims.value_dim >= 0 && dims.head_group >= 1,
               "attention_backward workspace: negative size");
  return detail::backward_workspace_floats(pattern.rows, pattern.cols, nnz, dims);
}

}  // namespace spattn::cuda

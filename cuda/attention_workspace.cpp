// Host-side sizing for the fused attention backward (kept out of the .cu files: host code only).

#include "attention_workspace.hpp"
#include "spattn/cuda_kernels.hpp"

namespace spattn::cuda {

index_t attention_backward_workspace_size(CsrView pattern, index_t nnz, AttentionDims dims) {
  SPATTN_CHECK(dims.batch >= 0 && pattern.rows >= 0 && nnz >= 0 && dims.bias_heads >= 0,
               "attention_backward workspace: negative size");
  return detail::backward_workspace_floats(dims.batch, pattern.rows, nnz, dims.bias_heads);
}

}  // namespace spattn::cuda

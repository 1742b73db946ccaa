// spattn::cuda::tensor_core_shared_bytes (spattn/cuda_kernels.hpp): the dynamic shared memory of the
// register-resident tensor-core kernels, from their layout (flash_step.cuh), for tools such as
// bench/sass_report.py.

#include "flash_step.cuh"

namespace spattn::cuda {

index_t tensor_core_shared_bytes(bool backward, index_t head_dim, index_t value_dim, index_t storage_bytes) {
  SPATTN_CHECK(head_dim > 0 && value_dim > 0 && head_dim <= detail::kMaxMmaDim && value_dim <= detail::kMaxMmaDim,
               "tensor_core_shared_bytes: head dims must be 1 to ", detail::kMaxMmaDim, ", got ", head_dim, " and ",
               value_dim);
  SPATTN_CHECK(storage_bytes == 2, "tensor_core_shared_bytes: the tensor-core kernels take 2-byte types, got ",
               storage_bytes, " bytes");
  // With a bias (and, for the backward, its gradient): the largest layout.
  return detail::flash_layout(static_cast<int>(head_dim), static_cast<int>(value_dim), true, backward, backward).bytes;
}

}  // namespace spattn::cuda

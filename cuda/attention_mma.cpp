// Host-side checks for the tensor-core kernels (kept out of the .cu files: host code only).

#include "attention_mma.hpp"

#include "launch_check.hpp"

namespace spattn::cuda::detail {

namespace {
int current_device_attribute(cudaDeviceAttr attribute) {
  int device = 0, value = 0;
  SPATTN_CUDA_CHECK(cudaGetDevice(&device));
  SPATTN_CUDA_CHECK(cudaDeviceGetAttribute(&value, attribute, device));
  return value;
}
}  // namespace

bool mma_applies(index_t head_dim, index_t value_dim) {
  return head_dim >= 0 && value_dim >= 0 && head_dim <= kMaxMmaDim && value_dim <= kMaxMmaDim &&
         current_device_attribute(cudaDevAttrComputeCapabilityMajor) >= 8;
}

bool mma_fits(int shared_bytes) {
  return shared_bytes <= current_device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin);
}

bool mma_kernel_built(const void* kernel) {
  cudaFuncAttributes attributes{};
  SPATTN_CUDA_CHECK(cudaFuncGetAttributes(&attributes, kernel));
  return attributes.ptxVersion >= 80;
}

}  // namespace spattn::cuda::detail

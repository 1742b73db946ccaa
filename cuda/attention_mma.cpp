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

bool mma_kernel_ready(const void* kernel, int shared_bytes) {
  if (shared_bytes > current_device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin)) return false;
  cudaFuncAttributes attributes{};
  SPATTN_CUDA_CHECK(cudaFuncGetAttributes(&attributes, kernel));
  if (attributes.ptxVersion < 80) return false;
  if (shared_bytes > 48 * 1024) {
    SPATTN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, shared_bytes));
  }
  return true;
}

}  // namespace spattn::cuda::detail

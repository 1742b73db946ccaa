// Host-side checks for the tensor-core kernels (kept out of the .cu files: host code only). They run on
// every call of a grouped op, so what they learn from the runtime (device attributes, a kernel's PTX
// version, the shared memory a kernel is allowed) is remembered per device and kernel: none of it changes.

#include "attention_mma.hpp"

#include <map>
#include <mutex>
#include <utility>

#include "launch_check.hpp"

namespace spattn::cuda::detail {

namespace {

struct DeviceFacts {
  int compute_major = 0;
  int shared_optin = 0;  // most dynamic shared memory a block may opt in to
  int multiprocessors = 0;
};

struct KernelFacts {
  bool built_for_sm80 = false;
  int shared_allowed = 48 * 1024;  // without opting in
  std::map<std::pair<int, int>, int> resident_blocks;  // (threads, shared bytes) -> blocks per multiprocessor
};

std::mutex facts_mutex;
std::map<int, DeviceFacts> device_facts_cache;
std::map<std::pair<int, const void*>, KernelFacts> kernel_facts_cache;

int current_device() {
  int device = 0;
  SPATTN_CUDA_CHECK(cudaGetDevice(&device));
  return device;
}

// Call with facts_mutex held.
const DeviceFacts& device_facts(int device) {
  const auto found = device_facts_cache.find(device);
  if (found != device_facts_cache.end()) return found->second;
  DeviceFacts facts;
  SPATTN_CUDA_CHECK(cudaDeviceGetAttribute(&facts.compute_major, cudaDevAttrComputeCapabilityMajor, device));
  SPATTN_CUDA_CHECK(cudaDeviceGetAttribute(&facts.shared_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  SPATTN_CUDA_CHECK(cudaDeviceGetAttribute(&facts.multiprocessors, cudaDevAttrMultiProcessorCount, device));
  return device_facts_cache.emplace(device, facts).first->second;
}

}  // namespace

bool mma_applies(index_t head_dim, index_t value_dim) {
  if (head_dim < 0 || value_dim < 0 || head_dim > kMaxMmaDim || value_dim > kMaxMmaDim) return false;
  const int device = current_device();
  const std::lock_guard<std::mutex> lock(facts_mutex);
  return device_facts(device).compute_major >= 8;
}

bool mma_kernel_ready(const void* kernel, int shared_bytes) {
  const int device = current_device();
  const std::lock_guard<std::mutex> lock(facts_mutex);
  if (shared_bytes > device_facts(device).shared_optin) return false;
  auto entry = kernel_facts_cache.find({device, kernel});
  if (entry == kernel_facts_cache.end()) {
    cudaFuncAttributes attributes{};
    SPATTN_CUDA_CHECK(cudaFuncGetAttributes(&attributes, kernel));  // (a failure caches nothing)
    entry = kernel_facts_cache.emplace(std::make_pair(device, kernel), KernelFacts{attributes.ptxVersion >= 80}).first;
  }
  KernelFacts& facts = entry->second;
  if (!facts.built_for_sm80) return false;
  if (shared_bytes > facts.shared_allowed) {
    SPATTN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, shared_bytes));
    facts.shared_allowed = shared_bytes;
  }
  return true;
}

int persistent_blocks(const void* kernel, int threads, int shared_bytes, index_t items) {
  const int device = current_device();
  const std::lock_guard<std::mutex> lock(facts_mutex);
  const int multiprocessors = device_facts(device).multiprocessors;
  // mma_kernel_ready ran first: the kernel's facts exist.
  KernelFacts& facts = kernel_facts_cache.at({device, kernel});
  auto found = facts.resident_blocks.find({threads, shared_bytes});
  if (found == facts.resident_blocks.end()) {
    int blocks = 0;
    SPATTN_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, threads,
                                                                    static_cast<std::size_t>(shared_bytes)));
    found = facts.resident_blocks.emplace(std::make_pair(threads, shared_bytes), blocks).first;
  }
  const index_t grid = static_cast<index_t>(multiprocessors) * (found->second > 0 ? found->second : 1);
  return static_cast<int>(items < grid ? (items > 0 ? items : 1) : grid);
}

}  // namespace spattn::cuda::detail

// Device queries. A machine without a driver or a GPU is a normal case, not an error: it reports 0.

#include <string>

#include "launch_check.hpp"
#include "spattn/cuda.hpp"

namespace spattn::cuda {

int device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error so later calls start clean
    return 0;
  }
  return count;
}

bool is_available() { return device_count() > 0; }

std::string device_name(int device) {
  const int count = device_count();
  SPATTN_CHECK(device >= 0 && device < count, "device: index ", device, " is out of range, ", count,
               " CUDA device(s) visible");
  cudaDeviceProp properties{};
  SPATTN_CUDA_CHECK(cudaGetDeviceProperties(&properties, device));
  return std::string(properties.name) + " (sm_" + std::to_string(properties.major) +
         std::to_string(properties.minor) + ")";
}

}  // namespace spattn::cuda

#include "launch_check.hpp"

namespace spattn::cuda {
namespace {

__global__ void fill_kernel(float* __restrict__ out, long long count, float value) {
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    out[i] = value;
  }
}

}  // namespace

void fill(float* out, long long count, float value, cudaStream_t stream) {
  if (count <= 0) return;
  constexpr int threads = 256;
  const long long wanted = (count + threads - 1) / threads;
  const int blocks = static_cast<int>(wanted < 65535 ? wanted : 65535);
  fill_kernel<<<blocks, threads, 0, stream>>>(out, count, value);
  SPATTN_CUDA_CHECK_LAUNCH();
}

}  // namespace spattn::cuda

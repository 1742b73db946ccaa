// Toy kernels whose sm_90 code ends the captured sample of tests/test_sass_report.py (not part of spattn, not
// built by it):
//   nvcc -arch sm_90 -cubin -o toy.cubin sass_report_toy.cu
//   cuobjdump -res-usage toy.cubin; cuobjdump -sass toy.cubin
#include <cuda_bf16.h>
#include <cstdint>

namespace toy {

// cp.async gathers, ldmatrix operands, mma.sync m16n8k16 and exp2: what the flash kernels must show.
template <typename T, int HeadDim>
__global__ void __launch_bounds__(128) attention_forward_flash_kernel(const T* q, const T* k, float* out, int n) {
  __shared__ __align__(16) T tile[2][64 * HeadDim];
  const int lane = threadIdx.x % 32;
  for (int i = threadIdx.x; i < 64 * HeadDim / 8; i += blockDim.x) {
    const unsigned target = static_cast<unsigned>(__cvta_generic_to_shared(&tile[0][8 * i]));
    const unsigned target_k = static_cast<unsigned>(__cvta_generic_to_shared(&tile[1][8 * i]));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n"
                 ::"r"(target), "l"(q + 8 * i + blockIdx.x * 64 * HeadDim));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(target_k), "l"(k + 8 * i));
  }
  asm volatile("cp.async.commit_group;\n" ::);
  asm volatile("cp.async.wait_group 0;\n" ::);
  __syncthreads();
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  for (int kk = 0; kk < HeadDim; kk += 16) {
    unsigned a[4], b[2];
    const T* a_row = &tile[0][(lane % 16) * HeadDim + kk + (lane / 16) * 8];
    const T* b_row = &tile[1][(lane % 8) * HeadDim + kk + ((lane / 8) % 2) * 8];
    const unsigned a_address = static_cast<unsigned>(__cvta_generic_to_shared(a_row));
    const unsigned b_address = static_cast<unsigned>(__cvta_generic_to_shared(b_row));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3]) : "r"(a_address));
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
                 : "=r"(b[0]), "=r"(b[1]) : "r"(b_address));
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
                 "{%0, %1, %2, %3};\n"
                 : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
  for (int j = 0; j < 4; ++j) out[(blockIdx.x * blockDim.x + threadIdx.x) * 4 + j] = exp2f(acc[j]);
}
template __global__ void attention_forward_flash_kernel<__nv_bfloat16, 32>(const __nv_bfloat16*,
                                                                            const __nv_bfloat16*, float*, int);

// Sixteen 128-thread blocks per SM leave 32 registers a thread, too few for 64 live values: spills
// (STL/LDL). A pointer that may be shared or global memory: a generic LD; a transpose: MOVM.
__global__ void __launch_bounds__(128, 16) spilling_mma_kernel(const float* x, float* out, int n, int flag) {
  __shared__ float staged[128];
  staged[threadIdx.x] = x[threadIdx.x];
  __syncthreads();
  const float* either = flag ? staged : x + n;
  const float loaded = either[threadIdx.x ^ 1];
  unsigned moved;
  asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(moved) : "r"(__float_as_uint(loaded)));
  float v[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) v[i] = x[i * n + threadIdx.x];
  for (int j = 0; j < n; ++j) {
#pragma unroll
    for (int i = 0; i < 64; ++i) v[i] = v[i] * v[63 - i] + __uint_as_float(moved);
  }
#pragma unroll
  for (int i = 0; i < 64; ++i) out[i * n + threadIdx.x] = v[i];
}

// Not selected by the default filter.
__global__ void fill_kernel(float* x, float value, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] = value;
}

}  // namespace toy

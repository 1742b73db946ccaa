#pragma once
// Device-side basics shared by every kernel: the CUDA type behind each storage type, conversions to and
// from float (all arithmetic is in float), group reductions, and the grid-stride launch shape.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "launch_check.hpp"
#include "spattn/kernels.hpp"

namespace spattn::cuda::detail {

// spattn::float16 / bfloat16 hold the same bits as __half / __nv_bfloat16.
template <typename T>
struct DeviceTypeOf {
  using type = T;
};
template <>
struct DeviceTypeOf<float16> {
  using type = __half;
};
template <>
struct DeviceTypeOf<bfloat16> {
  using type = __nv_bfloat16;
};
template <typename T>
using device_t = typename DeviceTypeOf<T>::type;
static_assert(sizeof(float16) == sizeof(__half) && sizeof(bfloat16) == sizeof(__nv_bfloat16));

template <typename T>
const device_t<T>* to_device(const T* pointer) {
  return reinterpret_cast<const device_t<T>*>(pointer);
}
template <typename T>
device_t<T>* to_device(T* pointer) {
  return reinterpret_cast<device_t<T>*>(pointer);
}

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename D>
__device__ __forceinline__ D from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __half from_float<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// Declares the block's dynamic shared memory as T name[], 128-byte aligned (the tensor-core tiles need 32).
// A macro so that the CPU emulation of the C++ tests (cpp/tests/cuda_emulation.hpp) can provide the memory.
#ifndef SPATTN_DYNAMIC_SHARED
#define SPATTN_DYNAMIC_SHARED(T, name) extern __shared__ __align__(128) T name[]
#endif

constexpr unsigned kFullWarp = 0xffffffffu;
constexpr float kNegativeInfinity = -__builtin_huge_valf();

// The lanes of the aligned group of kLanes lanes (kLanes divides 32) that the calling lane belongs to.
// Groups of one warp may run loops of different lengths, so their shuffles name only their own lanes.
template <int kLanes>
__device__ __forceinline__ unsigned group_mask() {
  if constexpr (kLanes == 32) {
    return kFullWarp;
  } else {
    const unsigned first = (threadIdx.x % 32u) / kLanes * kLanes;
    return ((1u << kLanes) - 1u) << first;
  }
}

// Butterfly sum: every lane of the group ends with the same, bitwise identical value (a + b == b + a).
template <int kLanes>
__device__ __forceinline__ float group_sum(float x, unsigned mask) {
#pragma unroll
  for (int offset = kLanes / 2; offset > 0; offset /= 2) x += __shfl_xor_sync(mask, x, offset);
  return x;
}
template <int kLanes>
__device__ __forceinline__ float group_max(float x, unsigned mask) {
#pragma unroll
  for (int offset = kLanes / 2; offset > 0; offset /= 2) x = fmaxf(x, __shfl_xor_sync(mask, x, offset));
  return x;
}

// Kernels walk their work items (one per (problem, row) or (problem, column)) with a grid-stride loop, so
// any number of items fits a grid; the cap keeps the grid well inside gridDim.x's limit.
constexpr int kThreadsPerBlock = 256;
constexpr index_t kMaxBlocks = index_t{1} << 20;

inline int blocks_for(index_t items, int items_per_block) {
  const index_t wanted = (items + items_per_block - 1) / items_per_block;
  return static_cast<int>(wanted < kMaxBlocks ? wanted : kMaxBlocks);
}

// First work item of the calling lane's group and the stride between a group's items.
template <int kLanes>
__device__ __forceinline__ index_t first_item() {
  return (static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kLanes;
}
template <int kLanes>
__device__ __forceinline__ index_t item_stride() {
  return static_cast<index_t>(gridDim.x) * blockDim.x / kLanes;
}

}  // namespace spattn::cuda::detail

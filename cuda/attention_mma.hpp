#pragma once
// When the tensor-core kernels over the execution plan (float16 and bfloat16) apply: host-side checks, kept
// out of the .cu files (their entry points are in attention_arguments.cuh).

#include <cuda_runtime.h>

#include "spattn/kernels.hpp"

namespace spattn::cuda::detail {

// Head dims the tensor-core kernels take (each padded to a multiple of 16).
inline constexpr index_t kMaxMmaDim = 128;

// Head dims within kMaxMmaDim and a device of compute capability 8.0 or more (bfloat16 tensor cores).
bool mma_applies(index_t head_dim, index_t value_dim);
// Whether `kernel` can run on the current device with this much dynamic shared memory per block: the
// device has it, and the kernel's code for the device was compiled for sm_80 or newer (a build for older
// architectures only, run on a newer GPU through the PTX JIT, has the kernels' bodies compiled out). If so,
// the kernel is allowed that much shared memory (above 48 KiB a kernel must opt in; legal during capture).
bool mma_kernel_ready(const void* kernel, int shared_bytes);
// The grid of a persistent kernel: as many blocks as the device runs at once (multiprocessors times the
// blocks of `kernel` one holds), at most one per work item and at least one.
int persistent_blocks(const void* kernel, int threads, int shared_bytes, index_t items);

}  // namespace spattn::cuda::detail

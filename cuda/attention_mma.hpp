#pragma once
// The tensor-core kernels over the execution plan (float16 and bfloat16): when they apply, and their entry
// points for the public functions in attention_forward_grouped.cu and attention_backward.cu. Each entry
// returns false, having done nothing, when the tensor-core path does not apply (float32, a head dim above
// kMaxMmaDim, a device below sm_80, or too little shared memory); the caller then runs its other kernels.

#include <cuda_runtime.h>

#include "spattn/kernels.hpp"
#include "spattn/plan.hpp"

namespace spattn::cuda::detail {

// Head dims the tensor-core kernels take (each padded to a multiple of 16).
inline constexpr index_t kMaxMmaDim = 128;
// Rows of a group one block takes per pass (mma_tiles.cuh). In the backward, a group of at most this many
// rows that is the only user of a column reduces that column's dK and dV itself.
inline constexpr index_t kMmaChunkRows = 64;

// Head dims within kMaxMmaDim and a device of compute capability 8.0 or more (bfloat16 tensor cores).
bool mma_applies(index_t head_dim, index_t value_dim);
// Whether `kernel` can run on the current device with this much dynamic shared memory per block: the
// device has it, and the kernel's code for the device was compiled for sm_80 or newer (a build for older
// architectures only, run on a newer GPU through the PTX JIT, has the kernels' bodies compiled out). If so,
// the kernel is allowed that much shared memory (above 48 KiB a kernel must opt in; legal during capture).
bool mma_kernel_ready(const void* kernel, int shared_bytes);

template <typename T>
bool attention_forward_mma(CsrView pattern, GroupsView groups, const T* q, const T* k, const T* v, const T* bias,
                           AttentionDims dims, double scale, T* out, float* lse, cudaStream_t stream);

// What the grouped backward needs beyond the forward's arguments. Workspace pieces (attention_workspace.hpp):
// delta [batch, rows] (written for every row), bias_partial (null without a bias gradient) and
// group_of_row [rows] (written here: the group of each row, read by the column pass to skip the columns
// this kernel completed).
struct MmaBackwardScratch {
  const index_t* transposed_row_offsets;
  float* delta;
  float* bias_partial;
  index_t bias_chunks;
  index_t* group_of_row;
};

// Writes delta, dQ of every row, dK and dV of every column owned by a group (all of its entries in one
// group of at most kMmaChunkRows rows), and the bias gradient's partial sums; the other columns' dK and dV
// are left to the caller's column pass, which must skip exactly the owned ones (column_owned_by_group).
template <typename T>
bool attention_backward_mma(CsrView pattern, GroupsView groups, const T* q, const T* k, const T* v, const T* bias,
                            const T* out, const T* grad_out, const float* lse, AttentionDims dims, double scale,
                            T* grad_q, T* grad_k, T* grad_v, const MmaBackwardScratch& scratch, cudaStream_t stream);

}  // namespace spattn::cuda::detail

#pragma once
// Grouped-query attention after the tensor-core backward (attention_backward_flash_kernel.cuh): that kernel
// leaves the dK and dV of the columns it owns per query problem, as floats in the workspace; this kernel adds
// each k/v problem's head_group partials, in order, into grad_k and grad_v. A header of its own so that the
// emulated tests (cpp/tests) run it after the emulated tensor-core kernel.

#include "attention_arguments.cuh"

namespace spattn::cuda::detail {

// The lower bound of `value` in the sorted array [first, first + count).
__device__ __forceinline__ const index_t* lower_bound(const index_t* first, index_t count, index_t value) {
  while (count > 0) {
    const index_t half = count / 2;
    if (first[half] < value) {
      first += half + 1;
      count -= half + 1;
    } else {
      count = half;
    }
  }
  return first;
}

// grad_k and grad_v of the owned columns (those not in the sorted list args.unowned_columns: the column pass
// writes those, and their partials were never written) are the sums of the g = head_group query problems'
// partials, added in order. One element (k/v problem, column, d) per thread and step of a striding grid,
// dK's elements then dV's.
template <typename D>
__global__ void __launch_bounds__(kThreadsPerBlock)
    attention_backward_sum_partials_kernel(const BackwardArguments<D> args) {
  const index_t head_group = args.k_layout.head_group, kv_columns = args.batch / head_group * args.cols;
  const index_t key_elements = kv_columns * args.head_dim, elements = key_elements + kv_columns * args.value_dim;
  for (index_t index = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; index < elements;
       index += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const bool key = index < key_elements;
    const index_t dim = key ? args.head_dim : args.value_dim;
    const index_t element = key ? index : index - key_elements;
    const index_t kv_column = element / dim, d = element % dim;
    const index_t kv_problem = kv_column / args.cols, column = kv_column % args.cols;
    const index_t* unowned = lower_bound(args.unowned_columns, args.unowned_column_count, column);
    if (unowned != args.unowned_columns + args.unowned_column_count && *unowned == column) continue;
    const float* partial = key ? args.key_partial : args.value_partial;
    float total = 0.f;
    for (index_t i = 0; i < head_group; ++i) {
      total += partial[((kv_problem * head_group + i) * args.cols + column) * dim + d];
    }
    (key ? args.grad_k : args.grad_v)[element] = from_float<D>(total);
  }
}

}  // namespace spattn::cuda::detail

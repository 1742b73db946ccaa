// Launches the tensor-core backward (attention_backward_mma_kernel.cuh) for attention_backward with a plan.

#include "attention_backward_mma_kernel.cuh"

namespace spattn::cuda {
namespace detail {
namespace {

// group_of_row[row] = the plan group of row (read by the column pass).
__global__ void __launch_bounds__(kThreadsPerBlock)
    fill_group_of_row_kernel(index_t groups, const index_t* __restrict__ group_offsets,
                             const index_t* __restrict__ group_rows, index_t* __restrict__ group_of_row) {
  for (index_t group = blockIdx.x; group < groups; group += gridDim.x) {
    for (index_t i = group_offsets[group] + threadIdx.x; i < group_offsets[group + 1]; i += blockDim.x) {
      group_of_row[group_rows[i]] = group;
    }
  }
}

}  // namespace

template <typename D>
bool attention_backward_mma(const BackwardArguments<D>& args, index_t* group_of_row, cudaStream_t stream) {
  if constexpr (std::is_same_v<D, float>) {
    return false;  // tensor cores would round float32 inputs (tf32)
  } else {
    if (!mma_applies(args.head_dim, args.value_dim)) return false;
    if (!operands_contiguous(args)) return false;  // strided operands: the SIMT kernels
    const int shared_bytes =
        backward_tiles(static_cast<int>(args.head_dim), static_cast<int>(args.value_dim), sizeof(D)).bytes;
    const auto kernel = attention_backward_mma_kernel<D>;
    if (!mma_kernel_ready(reinterpret_cast<const void*>(kernel), shared_bytes)) return false;
    SPATTN_CHECK(reinterpret_cast<std::uintptr_t>(group_of_row) % alignof(index_t) == 0,
                 "attention_backward: the workspace must be 8-byte aligned");
    const VectorLoads loads{rows_vectorized(args.q, args.head_dim), rows_vectorized(args.k, args.head_dim),
                            rows_vectorized(args.v, args.value_dim), rows_vectorized(args.grad_out, args.value_dim)};
    fill_group_of_row_kernel<<<blocks_for(args.groups, 1), kThreadsPerBlock, 0, stream>>>(
        args.groups, args.group_offsets, args.group_rows, group_of_row);
    SPATTN_CUDA_CHECK_LAUNCH();
    // Items as the kernel counts them: (chunk of problems, bias head, group) with a bias gradient, else
    // (problem, group).
    const bool sum_bias = args.grad_bias != nullptr;
    const index_t items = (sum_bias ? args.bias_chunks * args.bias_heads : args.batch) * args.groups;
    if (items > 0) {
      kernel<<<blocks_for(items, 1), kMmaThreads, static_cast<std::size_t>(shared_bytes), stream>>>(args, loads);
      SPATTN_CUDA_CHECK_LAUNCH();
    }
    return true;
  }
}

template bool attention_backward_mma<float>(const BackwardArguments<float>&, index_t*, cudaStream_t);
template bool attention_backward_mma<__half>(const BackwardArguments<__half>&, index_t*, cudaStream_t);
template bool attention_backward_mma<__nv_bfloat16>(const BackwardArguments<__nv_bfloat16>&, index_t*,
                                                    cudaStream_t);

}  // namespace detail
}  // namespace spattn::cuda

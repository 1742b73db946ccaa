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

template <typename T>
bool attention_backward_mma(CsrView pattern, GroupsView groups, const T* q, const T* k, const T* v, const T* bias,
                            const T* out, const T* grad_out, const float* lse, AttentionDims dims, double scale,
                            T* grad_q, T* grad_k, T* grad_v, const MmaBackwardScratch& scratch, cudaStream_t stream) {
  if constexpr (std::is_same_v<T, float>) {
    return false;  // tensor cores would round float32 inputs (tf32)
  } else {
    if (!mma_applies(dims.head_dim, dims.value_dim)) return false;
    using D = device_t<T>;
    const int shared_bytes =
        backward_tiles(static_cast<int>(dims.head_dim), static_cast<int>(dims.value_dim), sizeof(D)).bytes;
    const auto kernel = attention_backward_mma_kernel<D>;
    if (!mma_kernel_ready(reinterpret_cast<const void*>(kernel), shared_bytes)) return false;
    SPATTN_CHECK(reinterpret_cast<std::uintptr_t>(scratch.group_of_row) % alignof(index_t) == 0,
                 "attention_backward: the workspace must be 8-byte aligned");
    const MmaBackwardArguments<D> args{pattern.rows,
                                       pattern.cols,
                                       dims.batch,
                                       dims.head_dim,
                                       dims.value_dim,
                                       dims.bias_heads,
                                       groups.groups,
                                       pattern.row_offsets,
                                       pattern.col_indices,
                                       scratch.transposed_row_offsets,
                                       groups.group_offsets,
                                       groups.group_rows,
                                       to_device(q),
                                       to_device(k),
                                       to_device(v),
                                       to_device(bias),
                                       to_device(out),
                                       to_device(grad_out),
                                       lse,
                                       to_device(grad_q),
                                       to_device(grad_k),
                                       to_device(grad_v),
                                       scratch.delta,
                                       scratch.bias_partial,
                                       scratch.bias_chunks,
                                       static_cast<float>(scale),
                                       rows_vectorized(q, dims.head_dim),
                                       rows_vectorized(k, dims.head_dim),
                                       rows_vectorized(v, dims.value_dim),
                                       rows_vectorized(grad_out, dims.value_dim)};
    fill_group_of_row_kernel<<<blocks_for(groups.groups, 1), kThreadsPerBlock, 0, stream>>>(
        groups.groups, groups.group_offsets, groups.group_rows, scratch.group_of_row);
    SPATTN_CUDA_CHECK_LAUNCH();
    const index_t heads = scratch.bias_partial != nullptr ? dims.bias_heads : dims.batch;
    const index_t items = (scratch.bias_partial != nullptr ? scratch.bias_chunks : 1) * heads * groups.groups;
    if (items > 0) {
      kernel<<<blocks_for(items, 1), kMmaThreads, static_cast<std::size_t>(shared_bytes), stream>>>(args);
      SPATTN_CUDA_CHECK_LAUNCH();
    }
    return true;
  }
}

#define SPATTN_INSTANTIATE(T)                                                                                    \
  template bool attention_backward_mma<T>(CsrView, GroupsView, const T*, const T*, const T*, const T*, const T*,  \
                                          const T*, const float*, AttentionDims, double, T*, T*, T*,              \
                                          const MmaBackwardScratch&, cudaStream_t);
SPATTN_INSTANTIATE(float)
SPATTN_INSTANTIATE(float16)
SPATTN_INSTANTIATE(bfloat16)
#undef SPATTN_INSTANTIATE

}  // namespace detail
}  // namespace spattn::cuda

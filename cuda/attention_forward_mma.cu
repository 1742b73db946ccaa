// Launches the tensor-core forward (attention_forward_mma_kernel.cuh) for attention_forward_grouped.

#include "attention_forward_mma_kernel.cuh"

namespace spattn::cuda {
namespace detail {

template <typename T>
bool attention_forward_mma(CsrView pattern, GroupsView groups, const T* q, const T* k, const T* v, const T* bias,
                           AttentionDims dims, double scale, T* out, float* lse, cudaStream_t stream) {
  if constexpr (std::is_same_v<T, float>) {
    return false;  // tensor cores would round float32 inputs (tf32)
  } else {
    if (!mma_applies(dims.head_dim, dims.value_dim)) return false;
    using D = device_t<T>;
    const int shared_bytes =
        forward_tiles(static_cast<int>(dims.head_dim), static_cast<int>(dims.value_dim), sizeof(D)).bytes;
    const auto kernel = attention_forward_mma_kernel<D>;
    if (!mma_kernel_ready(reinterpret_cast<const void*>(kernel), shared_bytes)) return false;
    const MmaForwardArguments<D> args{pattern.rows,
                                      pattern.cols,
                                      dims.batch,
                                      dims.head_dim,
                                      dims.value_dim,
                                      dims.bias_heads,
                                      groups.groups,
                                      pattern.row_offsets,
                                      pattern.col_indices,
                                      groups.group_offsets,
                                      groups.group_rows,
                                      to_device(q),
                                      to_device(k),
                                      to_device(v),
                                      to_device(bias),
                                      to_device(out),
                                      lse,
                                      static_cast<float>(scale),
                                      rows_vectorized(q, dims.head_dim),
                                      rows_vectorized(k, dims.head_dim),
                                      rows_vectorized(v, dims.value_dim)};
    kernel<<<blocks_for(args.batch * args.groups, 1), kMmaThreads, static_cast<std::size_t>(shared_bytes), stream>>>(
        args);
    SPATTN_CUDA_CHECK_LAUNCH();
    return true;
  }
}

#define SPATTN_INSTANTIATE(T)                                                                                   \
  template bool attention_forward_mma<T>(CsrView, GroupsView, const T*, const T*, const T*, const T*, AttentionDims, \
                                         double, T*, float*, cudaStream_t);
SPATTN_INSTANTIATE(float)
SPATTN_INSTANTIATE(float16)
SPATTN_INSTANTIATE(bfloat16)
#undef SPATTN_INSTANTIATE

}  // namespace detail
}  // namespace spattn::cuda

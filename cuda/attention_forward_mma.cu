// Launches the tensor-core forward (attention_forward_mma_kernel.cuh) for attention_forward_grouped.

#include "attention_forward_mma_kernel.cuh"

namespace spattn::cuda::detail {

template <typename D>
bool attention_forward_mma(const GroupedArguments<D>& args, cudaStream_t stream) {
  if constexpr (std::is_same_v<D, float>) {
    return false;  // tensor cores would round float32 inputs (tf32)
  } else {
    if (!mma_applies(args.head_dim, args.value_dim)) return false;
    if (!operands_contiguous(args)) return false;  // strided operands: the SIMT kernels
    const int shared_bytes =
        forward_tiles(static_cast<int>(args.head_dim), static_cast<int>(args.value_dim), sizeof(D)).bytes;
    const auto kernel = attention_forward_mma_kernel<D>;
    if (!mma_kernel_ready(reinterpret_cast<const void*>(kernel), shared_bytes)) return false;
    const VectorLoads loads{rows_vectorized(args.q, args.head_dim), rows_vectorized(args.k, args.head_dim),
                            rows_vectorized(args.v, args.value_dim), false};
    kernel<<<blocks_for(args.batch * args.groups, 1), kMmaThreads, static_cast<std::size_t>(shared_bytes), stream>>>(
        args, loads);
    SPATTN_CUDA_CHECK_LAUNCH();
    return true;
  }
}

template bool attention_forward_mma<float>(const GroupedArguments<float>&, cudaStream_t);
template bool attention_forward_mma<__half>(const GroupedArguments<__half>&, cudaStream_t);
template bool attention_forward_mma<__nv_bfloat16>(const GroupedArguments<__nv_bfloat16>&, cudaStream_t);

}  // namespace spattn::cuda::detail

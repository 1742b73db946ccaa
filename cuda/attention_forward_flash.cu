// Launches the register-resident tensor-core forward (attention_forward_flash_kernel.cuh) for
// attention_forward_grouped.

#include "attention_forward_flash_kernel.cuh"

namespace spattn::cuda::detail {

namespace {

template <typename D, int kMaxDim>
bool launch_forward(const GroupedArguments<D>& args, const FlashOptions& options, cudaStream_t stream) {
  const int shared_bytes =
      flash_layout(static_cast<int>(args.head_dim), static_cast<int>(args.value_dim), args.bias != nullptr, false)
          .bytes;
  const auto kernel = attention_forward_flash_kernel<D, kMaxDim>;
  if (!mma_kernel_ready(reinterpret_cast<const void*>(kernel), shared_bytes)) return false;
  const int blocks = persistent_blocks(reinterpret_cast<const void*>(kernel), kFlashThreads, shared_bytes,
                                       args.step_count * args.batch);
  kernel<<<blocks, kFlashThreads, static_cast<std::size_t>(shared_bytes), stream>>>(args, options);
  SPATTN_CUDA_CHECK_LAUNCH();
  return true;
}

}  // namespace

template <typename D>
bool attention_forward_mma(const GroupedArguments<D>& args, cudaStream_t stream) {
  if constexpr (std::is_same_v<D, float>) {
    return false;  // tensor cores would round float32 inputs (tf32)
  } else {
    if (args.steps == nullptr || args.step_count <= 0 || args.batch <= 0) return false;
    if (!mma_applies(args.head_dim, args.value_dim)) return false;
    FlashOptions options{};
    options.async = rows_copyable(args.q, args.q_layout, args.head_dim) &&
                    rows_copyable(args.k, args.k_layout, args.head_dim) &&
                    rows_copyable(args.v, args.v_layout, args.value_dim) &&
                    (args.bias == nullptr || aligned_16(args.bias));
    const OperandLayout& out = args.out_layout;
    options.pair_stores = reinterpret_cast<std::uintptr_t>(args.out) % 4 == 0 && args.value_dim % 2 == 0 &&
                          out.batch_stride % 2 == 0 && out.head_stride % 2 == 0 && out.row_stride % 2 == 0;
    const index_t widest = args.head_dim > args.value_dim ? args.head_dim : args.value_dim;
    if (widest <= 32) return launch_forward<D, 32>(args, options, stream);
    if (widest <= 64) return launch_forward<D, 64>(args, options, stream);
    return launch_forward<D, 128>(args, options, stream);
  }
}

template bool attention_forward_mma<float>(const GroupedArguments<float>&, cudaStream_t);
template bool attention_forward_mma<__half>(const GroupedArguments<__half>&, cudaStream_t);
template bool attention_forward_mma<__nv_bfloat16>(const GroupedArguments<__nv_bfloat16>&, cudaStream_t);

}  // namespace spattn::cuda::detail

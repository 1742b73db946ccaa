// Launches the register-resident tensor-core backward (attention_backward_flash_kernel.cuh) for
// attention_backward with a plan (attention_backward.cu then sums the bias gradient's partial sums).

#include "attention_backward_flash_kernel.cuh"

namespace spattn::cuda::detail {

namespace {

template <typename D, int kMaxDim>
bool launch_backward(BackwardArguments<D>& args, FlashOptions gathers, cudaStream_t stream) {
  const int shared_bytes = flash_layout(static_cast<int>(args.head_dim), static_cast<int>(args.value_dim),
                                        args.bias != nullptr, true, args.grad_bias != nullptr)
                               .bytes;
  const auto kernel = attention_backward_flash_kernel<D, kMaxDim>;
  const void* kernel_address = reinterpret_cast<const void*>(kernel);
  if (!mma_kernel_ready(kernel_address, shared_bytes)) return false;

  FlashBackwardOptions options{gathers, args.batch, 1, nullptr};
  // Blocks resident at once: the persistent grid, and what the bias-gradient chunks are sized to fill.
  const index_t capacity = persistent_blocks(kernel_address, kFlashThreads, shared_bytes, index_t{1} << 40);
  index_t chunks = 0;
  if (args.grad_bias != nullptr) {
    // Problems of a bias head are split into as few chunks as fill the device: one chunk per head (no
    // partial sums to add but one) when the plan has enough steps, more for small patterns.
    const index_t problems_per_head = (args.batch + args.bias_heads - 1) / args.bias_heads;
    const index_t items_per_chunk = args.step_count * args.bias_heads;
    // The nearest whole number of waves: Swin stage 1 (65 steps x 4 heads = 260 items, 264 resident blocks on
    // an H100) keeps one chunk; stage 4 (1 step x 32 heads) takes 8.
    chunks = (2 * capacity + items_per_chunk) / (2 * items_per_chunk);
    const index_t most = args.bias_chunks < problems_per_head ? args.bias_chunks : problems_per_head;
    chunks = chunks < 1 ? 1 : chunks > most ? most : chunks;
    options.problems_per_chunk = (problems_per_head + chunks - 1) / chunks;
    options.problem_sets = args.bias_heads * chunks;
    options.bias_sums = args.bias_partial;
  }
  const index_t items = args.step_count * options.problem_sets;
  kernel<<<static_cast<int>(items < capacity ? items : capacity), kFlashThreads,
           static_cast<std::size_t>(shared_bytes), stream>>>(args, options);
  SPATTN_CUDA_CHECK_LAUNCH();
  if (args.grad_bias != nullptr) args.bias_chunks = chunks;  // the caller sums this many slices
  return true;
}

}  // namespace

template <typename D>
bool attention_backward_mma(BackwardArguments<D>& args, cudaStream_t stream) {
  if constexpr (std::is_same_v<D, float>) {
    return false;  // tensor cores would round float32 inputs (tf32)
  } else {
    if (args.steps == nullptr || args.step_count <= 0 || args.batch <= 0) return false;
    if (!mma_applies(args.head_dim, args.value_dim)) return false;
    FlashOptions gathers{};
    gathers.async = rows_copyable(args.q, args.q_layout, args.head_dim) &&
                    rows_copyable(args.k, args.k_layout, args.head_dim) &&
                    rows_copyable(args.v, args.v_layout, args.value_dim) &&
                    rows_copyable(args.out, args.out_layout, args.value_dim) &&
                    rows_copyable(args.grad_out, args.grad_out_layout, args.value_dim) &&
                    (args.bias == nullptr || aligned_16(args.bias));
    const index_t widest = args.head_dim > args.value_dim ? args.head_dim : args.value_dim;
    if (widest <= 32) return launch_backward<D, 32>(args, gathers, stream);
    if (widest <= 64) return launch_backward<D, 64>(args, gathers, stream);
    return launch_backward<D, 128>(args, gathers, stream);
  }
}

template bool attention_backward_mma<float>(BackwardArguments<float>&, cudaStream_t);
template bool attention_backward_mma<__half>(BackwardArguments<__half>&, cudaStream_t);
template bool attention_backward_mma<__nv_bfloat16>(BackwardArguments<__nv_bfloat16>&, cudaStream_t);

}  // namespace spattn::cuda::detail

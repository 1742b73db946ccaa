// Fused sparse attention forward: for each (problem, row), an online softmax over the row's entries,
// out = softmax(scale * q k^T + bias) v and lse = log-sum-exp of the scores. Scores never touch memory.

#include "attention_arguments.cuh"
#include "launcher_arguments.cuh"

namespace spattn::cuda {
namespace detail {
namespace {

template <typename Shape, typename D>
__global__ void __launch_bounds__(kThreadsPerBlock) attention_forward_kernel(const ForwardArguments<D> args) {
  constexpr int kLanes = Shape::kLanes, kElems = Shape::kElems, kStep = entries_per_step<Shape>();
  const int lane = threadIdx.x % kLanes;
  const unsigned mask = group_mask<kLanes>();
  const index_t nnz = args.row_offsets[args.rows];
  const index_t items = args.batch * args.rows;

  for (index_t item = first_item<kLanes>(); item < items; item += item_stride<kLanes>()) {
    const index_t problem = item / args.rows, row = item % args.rows;
    const D* k_problem = args.k + args.k_layout.problem_offset(problem, args.heads);
    const D* v_problem = args.v + args.v_layout.problem_offset(problem, args.heads);
    const D* bias_row = args.bias == nullptr ? nullptr : args.bias + (problem % args.bias_heads) * nnz;

    float q[kElems];
    load_fragment<Shape>(args.q + args.q_layout.problem_offset(problem, args.heads) + row * args.q_layout.row_stride,
                         args.head_dim, lane, q);
    float accumulator[kElems];
    zero_fragment(accumulator);
    float running_max = kNegativeInfinity, running_sum = 0.f;
    bool poisoned = false;  // a NaN score: fmaxf skips it, so it is tracked to reach the output as NaN

    const index_t begin = args.row_offsets[row], end = args.row_offsets[row + 1];
    for (index_t step = begin; step < end; step += kStep) {
      float key[kStep][kElems], value[kStep][kElems], score[kStep];
      load_step_keys_and_values<Shape, kStep>(args.col_indices, step, end, k_problem, args.k_layout.row_stride,
                                              args.head_dim, v_problem, args.v_layout.row_stride, args.value_dim,
                                              lane, key, value);
      float step_max = kNegativeInfinity;
#pragma unroll
      for (int u = 0; u < kStep; ++u) {
        const index_t entry = step + u;
        const float dot = group_sum<kLanes>(partial_dot(q, key[u]), mask);
        score[u] = entry < end ? dot * args.scale + (bias_row == nullptr ? 0.f : to_float(bias_row[entry]))
                               : kNegativeInfinity;
        step_max = fmaxf(step_max, score[u]);
        poisoned |= isnan(score[u]);
      }
      const float new_max = fmaxf(running_max, step_max);
      // Nothing but -inf so far: no weight to add (and exp(-inf - -inf) would be NaN). Same on every lane.
      if (new_max == kNegativeInfinity) continue;
      const float correction = expf(running_max - new_max);  // 0 on the first finite score
      running_sum *= correction;
#pragma unroll
      for (int i = 0; i < kElems; ++i) accumulator[i] *= correction;
#pragma unroll
      for (int u = 0; u < kStep; ++u) {
        const float weight = expf(score[u] - new_max);  // 0 for padding and masked entries
        running_sum += weight;
#pragma unroll
        for (int i = 0; i < kElems; ++i) accumulator[i] = fmaf(weight, value[u][i], accumulator[i]);
      }
      running_max = new_max;
    }

    // running_sum >= 1 once any score was finite (the maximum contributes exp(0)); NaN for a poisoned row.
    if (poisoned) running_sum = __int_as_float(0x7fc00000);
    const bool has_weight = running_sum != 0.f;
    store_fragment<Shape>(
        args.out + args.out_layout.problem_offset(problem, args.heads) + row * args.out_layout.row_stride,
        args.value_dim, lane, accumulator, has_weight ? 1.f / running_sum : 0.f);
    if (lane == 0) args.lse[item] = has_weight ? running_max + logf(running_sum) : kNegativeInfinity;
  }
}

}  // namespace
}  // namespace detail

template <typename T>
void attention_forward(CsrView pattern, const T* q, const T* k, const T* v, const T* bias, AttentionDims dims,
                       const AttentionLayouts& layouts, double scale, T* out, accumulate_t<T>* lse,
                       cudaStream_t stream) {
  using namespace detail;
  check_attention_arguments("attention_forward", pattern, bias, dims, layouts);
  const index_t items = dims.batch * pattern.rows;
  if (items == 0) return;
  using D = device_t<T>;
  ForwardArguments<D> args{};
  fill_shared_arguments(args, pattern, q, k, v, bias, dims, layouts, scale);
  args.out = to_device(out);
  args.lse = lse;
  // The fast paths read and write each lane's 4 elements of a row at once.
  const bool aligned = rows_aligned_to(q, layouts.q, 4) && rows_aligned_to(k, layouts.k, 4) &&
                       rows_aligned_to(v, layouts.v, 4) && rows_aligned_to(out, layouts.out, 4);
  dispatch_fragment_shape(dims.head_dim, dims.value_dim, aligned, [&](auto shape) {
    using Shape = decltype(shape);
    attention_forward_kernel<Shape, D>
        <<<blocks_for(items, kThreadsPerBlock / Shape::kLanes), kThreadsPerBlock, 0, stream>>>(args);
    SPATTN_CUDA_CHECK_LAUNCH();
  });
}

#define SPATTN_INSTANTIATE(T)                                                                              \
  template void attention_forward<T>(CsrView, const T*, const T*, const T*, const T*, AttentionDims,          \
                                     const AttentionLayouts&, double, T*, accumulate_t<T>*, cudaStream_t);
SPATTN_INSTANTIATE(float)
SPATTN_INSTANTIATE(float16)
SPATTN_INSTANTIATE(bfloat16)
#undef SPATTN_INSTANTIATE

}  // namespace spattn::cuda

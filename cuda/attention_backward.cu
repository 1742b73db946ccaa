// Fused sparse attention backward, probabilities recomputed from the forward's log-sum-exp:
//   P = exp(scale * q.k + bias - lse),  dP = dO.v,  dS = P * (dP - delta),  delta = rowsum(dO * O) - dlse
//   (dlse: the gradient reaching lse itself, d lse / d s = P, so it folds into delta)
//   dQ = scale * sum_row dS k       (row pass, also delta and partial sums of dBias)
//   dK = scale * sum_column dS q,  dV = sum_column P dO   (column pass, through the transposed pattern; after
//                                   the tensor-core backward over the plan, only the columns it leaves)
//   dBias = sum over problems of dS  (the row pass's partial sums added in chunk order)
// Each output element is owned by one lane group and summed in a fixed order: no atomics, deterministic.
//
// Grouped-query attention (g = head_group query heads per k/v head): a k/v head's dK and dV sum its g query
// heads'. The column pass takes one k/v problem per work item and walks its g query problems in turn, its
// sums in registers (k and v loaded once). The tensor-core kernel keeps its per-query-problem work items
// (they also carry the bias gradient's problem sets, which group query problems by bias head, not by k/v
// head): it writes the dK and dV of its owned columns per query problem as floats into the workspace, and a
// reduction adds each k/v head's g partials in order. A fixed order everywhere, no float atomics: results
// stay bitwise reproducible.

#include "attention_arguments.cuh"
#include "attention_backward_passes.cuh"
#include "attention_workspace.hpp"
#include "launcher_arguments.cuh"

namespace spattn::cuda {
namespace detail {
namespace {

template <typename T>
BackwardArguments<device_t<T>> backward_arguments(CsrView pattern, TransposedView transposed, const T* q, const T* k,
                                                  const T* v, const T* bias, const T* out, const T* grad_out,
                                                  const float* lse, const float* grad_lse, AttentionDims dims,
                                                  const AttentionLayouts& layouts, double scale, T* grad_q,
                                                  T* grad_k, T* grad_v, T* grad_bias, float* workspace) {
  check_attention_arguments("attention_backward", pattern, bias, dims, layouts);
  SPATTN_CHECK(grad_bias == nullptr || bias != nullptr, "attention_backward: grad_bias without a bias");
  SPATTN_CHECK(transposed.pattern.rows == pattern.cols && transposed.pattern.cols == pattern.rows,
               "attention_backward: the transposed pattern has shape (", transposed.pattern.rows, ", ",
               transposed.pattern.cols, "), expected (", pattern.cols, ", ", pattern.rows, ")");
  AttentionDims sizing = dims;
  if (grad_bias == nullptr) sizing.bias_heads = 0;  // (the workspace has no bias partial sums then)
  const BackwardWorkspace scratch(workspace, pattern.rows, pattern.cols, sizing);
  BackwardArguments<device_t<T>> args{};
  fill_shared_arguments(args, pattern, q, k, v, bias, dims, layouts, scale);
  args.transposed_row_offsets = transposed.pattern.row_offsets;
  args.transposed_col_indices = transposed.pattern.col_indices;
  args.permutation = transposed.permutation;
  args.out = to_device(out);
  args.grad_out = to_device(grad_out);
  args.lse = lse;
  args.grad_lse = grad_lse;
  args.grad_q = to_device(grad_q);
  args.grad_k = to_device(grad_k);
  args.grad_v = to_device(grad_v);
  args.grad_bias = to_device(grad_bias);
  args.delta = scratch.delta;
  args.key_partial = scratch.key_partial;
  args.value_partial = scratch.value_partial;
  args.bias_partial = scratch.bias_partial;
  args.bias_chunks = scratch.bias_chunks;
  args.grad_out_layout = layouts.grad_out;
  // The plan and its schedule: set by the caller once checked (none: groups = 0, nulls).
  return args;
}

// What the SIMT passes below still have to do.
enum class Remaining {
  everything,       // no tensor-core kernel ran: the row pass, every column, the sum of the bias partial sums
  unowned_columns,  // the columns of args.unowned_columns only (none: nothing), the sum of the bias partial sums
};

// The one place that chooses the tensor-core backward over the plan and says what it leaves to the SIMT
// passes; args has the plan (and, when given, its schedule). The register-resident kernel writes delta, dQ,
// dK and dV of the owned columns (under grouped-query attention: their per-query-problem partials, summed
// here) and the bias gradient's partial sums (setting args.bias_chunks).
template <typename D>
Remaining tensor_core_backward(BackwardArguments<D>& args, cudaStream_t stream) {
  if (!attention_backward_mma(args, stream)) return Remaining::everything;
  if (args.k_layout.head_group > 1) {
    // The grid strides: a fixed size, enough to fill the device.
    attention_backward_sum_partials_kernel<D><<<kBiasSumBlocks, kThreadsPerBlock, 0, stream>>>(args);
    SPATTN_CUDA_CHECK_LAUNCH();
  }
  return Remaining::unowned_columns;
}

// The SIMT passes: the row pass (delta, dQ, bias partial sums), the column pass (dK, dV) over every column or
// over the listed ones, and the sum of the bias gradient's partial sums.
template <typename D>
void launch_backward(const BackwardArguments<D>& args, bool aligned, Remaining remaining, cudaStream_t stream) {
  const bool sum_bias = args.grad_bias != nullptr;
  const bool with_rows = remaining == Remaining::everything;
  const bool listed = remaining == Remaining::unowned_columns;
  const index_t row_items = (sum_bias ? args.bias_chunks * args.bias_heads : args.batch) * args.rows;
  const index_t column_items = args.batch / args.k_layout.head_group * (listed ? args.unowned_column_count : args.cols);
  dispatch_fragment_shape(args.head_dim, args.value_dim, aligned, [&](auto shape) {
    using Shape = decltype(shape);
    constexpr int kItemsPerBlock = kThreadsPerBlock / Shape::kLanes;
    // Rows first: the column pass reads delta.
    if (with_rows && row_items > 0) {
      attention_backward_rows_kernel<Shape, D>
          <<<blocks_for(row_items, kItemsPerBlock), kThreadsPerBlock, 0, stream>>>(args);
      SPATTN_CUDA_CHECK_LAUNCH();
    }
    if (column_items > 0) {
      attention_backward_columns_kernel<Shape, D>
          <<<blocks_for(column_items, kItemsPerBlock), kThreadsPerBlock, 0, stream>>>(args, listed);
      SPATTN_CUDA_CHECK_LAUNCH();
    }
  });
  if (sum_bias && args.bias_heads > 0) {
    // After the row pass on the same stream. nnz lives on the device, so the grid is fixed and strides.
    attention_backward_bias_kernel<D><<<kBiasSumBlocks, kThreadsPerBlock, 0, stream>>>(
        args.rows, args.row_offsets, args.bias_partial, args.grad_bias, args.bias_heads, args.bias_chunks);
    SPATTN_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace
}  // namespace detail

template <typename T>
void attention_backward(CsrView pattern, TransposedView transposed, GroupsView groups, const T* q, const T* k,
                        const T* v, const T* bias, const T* out, const T* grad_out, const accumulate_t<T>* lse,
                        const accumulate_t<T>* grad_lse, AttentionDims dims, const AttentionLayouts& layouts,
                        double scale, T* grad_q, T* grad_k, T* grad_v, T* grad_bias, accumulate_t<T>* workspace,
                        cudaStream_t stream) {
  using namespace detail;
  auto args = backward_arguments(pattern, transposed, q, k, v, bias, out, grad_out, lse, grad_lse, dims, layouts,
                                 scale, grad_q, grad_k, grad_v, grad_bias, workspace);
  // The fast paths read and write each lane's 4 elements of a row at once; the gradients are contiguous.
  const bool aligned =
      rows_aligned_to(q, layouts.q, 4) && rows_aligned_to(k, layouts.k, 4) && rows_aligned_to(v, layouts.v, 4) &&
      rows_aligned_to(out, layouts.out, 4) && rows_aligned_to(grad_out, layouts.grad_out, 4) &&
      rows_aligned_to(grad_q, OperandLayout::contiguous(dims.heads, pattern.rows, dims.head_dim), 4) &&
      rows_aligned_to(grad_k, OperandLayout::contiguous(dims.heads, pattern.cols, dims.head_dim, dims.head_group), 4) &&
      rows_aligned_to(grad_v, OperandLayout::contiguous(dims.heads, pattern.cols, dims.value_dim, dims.head_group), 4);
  if (groups.group_offsets == nullptr) return launch_backward(args, aligned, Remaining::everything, stream);  // no plan
  // Every row is in exactly one group (spattn::build_plan): between 1 and rows groups when there are rows.
  SPATTN_CHECK(groups.groups >= 0 && groups.groups <= pattern.rows && (pattern.rows == 0) == (groups.groups == 0),
               "attention_backward: a plan of ", pattern.rows, " rows has 1 to ", pattern.rows, " groups, got ",
               groups.groups);
  SPATTN_CHECK(groups.group_rows != nullptr, "attention_backward: the plan has no group_rows");
  SPATTN_CHECK(groups.step_count >= 0 && (groups.step_count == 0 || groups.steps != nullptr),
               "attention_backward: a schedule of ", groups.step_count, " steps has no array");
  SPATTN_CHECK(groups.unowned_column_count >= 0 && groups.unowned_column_count <= pattern.cols &&
                   (groups.unowned_column_count == 0 || groups.unowned_columns != nullptr),
               "attention_backward: the schedule's unowned columns must be 0 to ", pattern.cols, " columns, got ",
               groups.unowned_column_count);
  if (dims.batch == 0 || pattern.rows == 0) return launch_backward(args, aligned, Remaining::everything, stream);
  args.groups = groups.groups;
  args.group_offsets = groups.group_offsets;
  args.group_rows = groups.group_rows;
  if (groups.steps != nullptr) {  // the schedule (spattn/plan.hpp), with the columns its steps leave
    args.step_count = groups.step_count;
    args.steps = groups.steps;
    args.unowned_column_count = groups.unowned_column_count;
    args.unowned_columns = groups.unowned_columns;
  }
  const Remaining remaining = tensor_core_backward(args, stream);
  launch_backward(args, aligned, remaining, stream);
}

#define SPATTN_INSTANTIATE(T)                                                                                 \
  template void attention_backward<T>(CsrView, TransposedView, GroupsView, const T*, const T*, const T*,         \
                                      const T*, const T*, const T*, const accumulate_t<T>*,                      \
                                      const accumulate_t<T>*, AttentionDims, const AttentionLayouts&, double,    \
                                      T*, T*, T*, T*, accumulate_t<T>*, cudaStream_t);
SPATTN_INSTANTIATE(float)
SPATTN_INSTANTIATE(float16)
SPATTN_INSTANTIATE(bfloat16)
#undef SPATTN_INSTANTIATE

}  // namespace spattn::cuda

#pragma once
// The argument blocks of the fused attention kernels, shared by the SIMT kernels (attention_forward_grouped.cu,
// attention_backward.cu) and the tensor-core kernels of the execution plan (attention_*_flash_kernel.cuh), and
// the entry points of the tensor-core launchers.

#include "attention_common.cuh"

namespace spattn::cuda::detail {

// The row-by-row forward (attention_forward.cu).
template <typename D>
struct ForwardArguments {
  index_t rows, cols, batch, head_dim, value_dim, bias_heads;
  const index_t* __restrict__ row_offsets;
  const index_t* __restrict__ col_indices;
  const D* __restrict__ q;     // [batch, rows, head_dim]
  const D* __restrict__ k;     // [batch, cols, head_dim]
  const D* __restrict__ v;     // [batch, cols, value_dim]
  const D* __restrict__ bias;  // [bias_heads, nnz] or null
  D* __restrict__ out;         // [batch, rows, value_dim]
  float* __restrict__ lse;     // [batch, rows]
  float scale;
  // Where the rows of q, k, v and out live (spattn/kernels.hpp: problem p is (p / heads, p % heads)), so that
  // they can be strided views of one projection and out can be written in [B, N, H, Dv] order.
  index_t heads;
  OperandLayout q_layout, k_layout, v_layout, out_layout;
};

// The forward over the execution plan: the same operands, and the plan.
template <typename D>
struct GroupedArguments : ForwardArguments<D> {
  index_t groups;
  const index_t* __restrict__ group_offsets;
  const index_t* __restrict__ group_rows;
  bool vectorized;  // SIMT kernel: every row of k and v aligned to 4 elements, head_dim, value_dim multiples of 4
  // The plan's tensor-core schedule (spattn/plan.hpp), null without one.
  index_t step_count;
  const index_t* __restrict__ steps;
};

// The backward, with or without the plan. It does not extend ForwardArguments: there out is an output, here
// an input (const), and the backward's plan comes with its unowned columns.
template <typename D>
struct BackwardArguments {
  index_t rows, cols, batch, head_dim, value_dim, bias_heads;
  const index_t* __restrict__ row_offsets;
  const index_t* __restrict__ col_indices;
  const index_t* __restrict__ transposed_row_offsets;  // the transposed pattern: cols rows
  const index_t* __restrict__ transposed_col_indices;
  const index_t* __restrict__ permutation;  // transposed entry -> CSR entry
  const D* __restrict__ q;
  const D* __restrict__ k;
  const D* __restrict__ v;
  const D* __restrict__ bias;  // [bias_heads, nnz] or null
  const D* __restrict__ out;
  const D* __restrict__ grad_out;
  const float* __restrict__ lse;
  const float* __restrict__ grad_lse;  // [batch, rows] or null (no gradient reaches lse)
  D* __restrict__ grad_q;
  D* __restrict__ grad_k;            // [batch / head_group, cols, head_dim]
  D* __restrict__ grad_v;            // [batch / head_group, cols, value_dim]
  D* __restrict__ grad_bias;         // [bias_heads, nnz] or null
  float* __restrict__ delta;         // workspace [batch, rows]: rowsum(dO * O) - grad_lse
  // Grouped-query attention (k_layout.head_group > 1), else null: the tensor-core kernel's dK and dV per
  // query head, workspace [batch, cols, head_dim] and [batch, cols, value_dim] (attention_backward.cu).
  float* __restrict__ key_partial;
  float* __restrict__ value_partial;
  float* __restrict__ bias_partial;  // workspace [bias_chunks, bias_heads, nnz] (when grad_bias is wanted)
  index_t bias_chunks;
  float scale;
  // The execution plan (groups = 0 and nulls without one), read by the tensor-core kernel.
  index_t groups;
  const index_t* __restrict__ group_offsets;
  const index_t* __restrict__ group_rows;
  // As in GroupedArguments: the operands' layouts (k's and v's head_group is the grouped-query factor; grad_q,
  // grad_k, grad_v are contiguous)
  // and the plan's schedule with the columns its steps do not complete (spattn/plan.hpp).
  index_t heads;
  OperandLayout q_layout, k_layout, v_layout, out_layout, grad_out_layout;
  index_t step_count;
  const index_t* __restrict__ steps;
  index_t unowned_column_count;
  const index_t* __restrict__ unowned_columns;
};

// The register-resident tensor-core kernels over the plan's schedule (attention_*_flash.cu; D = __half or
// __nv_bfloat16, float returns false). Each returns false, having done nothing, where it does not apply
// (float32, no schedule, a head dim above kMaxMmaDim, a device below sm_80, too little shared memory); the
// caller then runs its SIMT kernels.
template <typename D>
bool attention_forward_mma(const GroupedArguments<D>& args, cudaStream_t stream);

// Writes delta (args.delta) and dQ of every row, dK and dV of every column a group owns (spattn/plan.hpp),
// and, when args.grad_bias is set, the bias gradient's partial sums in args.bias_partial, setting
// args.bias_chunks to the number of chunks it used. The caller then computes dK and dV of the plan's
// unowned columns and sums the chunks into grad_bias.
template <typename D>
bool attention_backward_mma(BackwardArguments<D>& args, cudaStream_t stream);

}  // namespace spattn::cuda::detail

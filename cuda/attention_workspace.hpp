#pragma once
// Layout of the attention backward's scratch (host code, shared by the sizing function and the launchers).
//
//   delta          [batch, rows]                   rowsum(grad_out * out) - grad_lse
//   key_partial    [batch, cols, head_dim]         grouped-query attention only (head_group > 1): the
//   value_partial  [batch, cols, value_dim]        tensor-core backward's dK and dV per query head
//   bias_partial   [bias_chunks, bias_heads, nnz]  partial sums of grad_bias, one per chunk of problems
//
// The problems sharing a bias head are split into chunks of kProblemsPerBiasChunk: each chunk sums its
// problems' score gradients into its own slice, and a final pass adds the slices in chunk order. This keeps
// dBias deterministic (no atomics) while giving the row pass enough parallelism when batch >> heads. (The
// tensor-core backward uses as few of these chunks as fill the device, often one per bias head.)
// The offsets depend on the sizes of the dense operands only: the launchers do not know nnz (it lives on the
// device), so bias_partial comes last.

#include "spattn/checked_math.hpp"
#include "spattn/kernels.hpp"

namespace spattn::cuda::detail {

inline constexpr index_t kProblemsPerBiasChunk = 4;

// Chunks per bias head (0 without a bias).
inline index_t bias_chunks(index_t batch, index_t bias_heads) {
  if (bias_heads <= 0 || batch <= 0) return bias_heads > 0 ? 1 : 0;
  const index_t problems_per_head = (batch + bias_heads - 1) / bias_heads;
  return (problems_per_head + kProblemsPerBiasChunk - 1) / kProblemsPerBiasChunk;
}

// Floats of key_partial (value_partial: the same with value_dim); none without grouped-query attention.
inline index_t backward_workspace_partial_floats(index_t batch, index_t cols, index_t dim, index_t head_group) {
  if (head_group <= 1) return 0;
  return checked_mul(checked_mul(batch, cols, "attention_backward workspace"), dim, "attention_backward workspace");
}

// Floats before bias_partial: delta and the dK, dV partials.
inline index_t backward_workspace_head_floats(index_t batch, index_t rows, index_t cols, AttentionDims dims) {
  const char* what = "attention_backward workspace";
  const index_t partials =
      checked_add(backward_workspace_partial_floats(batch, cols, dims.head_dim, dims.head_group),
                  backward_workspace_partial_floats(batch, cols, dims.value_dim, dims.head_group), what);
  return checked_add(checked_mul(batch, rows, what), partials, what);
}

inline index_t backward_workspace_floats(index_t rows, index_t cols, index_t nnz, AttentionDims dims) {
  const char* what = "attention_backward workspace";
  const index_t heads_nnz = checked_mul(dims.bias_heads, nnz, what);
  const index_t partial = checked_mul(bias_chunks(dims.batch, dims.bias_heads), heads_nnz, what);
  return checked_add(backward_workspace_head_floats(dims.batch, rows, cols, dims), partial, what);
}

// The pieces of a workspace of backward_workspace_floats(rows, cols, nnz, dims) floats (key_partial and
// value_partial null without grouped-query attention).
struct BackwardWorkspace {
  float* delta;
  float* key_partial;
  float* value_partial;
  float* bias_partial;
  index_t bias_chunks;

  BackwardWorkspace(float* base, index_t rows, index_t cols, AttentionDims dims)
      : delta(base),
        key_partial(dims.head_group > 1 ? base + dims.batch * rows : nullptr),
        value_partial(dims.head_group > 1 ? key_partial + dims.batch * cols * dims.head_dim : nullptr),
        bias_partial(base + backward_workspace_head_floats(dims.batch, rows, cols, dims)),
        bias_chunks(detail::bias_chunks(dims.batch, dims.bias_heads)) {}
};

}  // namespace spattn::cuda::detail

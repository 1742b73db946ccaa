#pragma once
// Layout of the attention backward's scratch (host code, shared by the sizing function and the launchers).
//
//   delta         [batch, rows]                   rowsum(grad_out * out)
//   bias_partial  [bias_chunks, bias_heads, nnz]  partial sums of grad_bias, one per chunk of problems
//
// The problems sharing a bias head are split into chunks of kProblemsPerBiasChunk: each chunk sums its
// problems' score gradients into its own slice, and a final pass adds the slices in chunk order. This keeps
// dBias deterministic (no atomics) while giving the row pass enough parallelism when batch >> heads. (The
// tensor-core backward uses as few of these chunks as fill the device, often one per bias head.)
// The offsets depend on batch and rows only: the launchers do not know nnz (it lives on the device).

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

// Floats before bias_partial: delta.
inline index_t backward_workspace_head_floats(index_t batch, index_t rows) {
  return checked_mul(batch, rows, "attention_backward workspace");
}

inline index_t backward_workspace_floats(index_t batch, index_t rows, index_t nnz, index_t bias_heads) {
  const index_t heads_nnz = checked_mul(bias_heads, nnz, "attention_backward workspace");
  const index_t partial = checked_mul(bias_chunks(batch, bias_heads), heads_nnz, "attention_backward workspace");
  return checked_add(backward_workspace_head_floats(batch, rows), partial, "attention_backward workspace");
}

// The pieces of a workspace of backward_workspace_floats(batch, rows, nnz, bias_heads) floats.
struct BackwardWorkspace {
  float* delta;
  float* bias_partial;
  index_t bias_chunks;

  BackwardWorkspace(float* base, index_t batch, index_t rows, index_t bias_heads)
      : delta(base),
        bias_partial(base + backward_workspace_head_floats(batch, rows)),
        bias_chunks(detail::bias_chunks(batch, bias_heads)) {}
};

}  // namespace spattn::cuda::detail

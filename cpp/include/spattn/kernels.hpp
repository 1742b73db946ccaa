#pragma once
// The kernel contract shared by the CPU (spattn::cpu) and CUDA (spattn::cuda) backends.
//
// Every kernel is batched over `batch` independent problems that share one pattern (batch = B * H for
// multi-head attention, flattened). All arrays are contiguous, row-major, and owned by the caller:
//   dense operands   a [batch, pattern.rows, dim], b [batch, pattern.cols, dim]
//   attention        q [batch, rows, head_dim], k [batch, cols, head_dim], v [batch, cols, value_dim],
//                    out [batch, rows, value_dim], lse [batch, rows]
//   pattern values   [batch, nnz] in CSR order
//   bias             [bias_heads, nnz]; problem `bh` reads head bh % bias_heads (1 = shared by all heads,
//                    H = one per head, batch = one per problem: a [B, H, nnz] bias)
//   grouped-query    with dims.head_group = g > 1, query head h reads k/v head h / g: k and v (and grad_k,
//                    grad_v) hold batch / g problems; the kernels sum dK and dV over the g query heads
// Rows without entries give zero outputs and zero gradients, and their log-sum-exp is -infinity.
// Kernels never allocate device memory; scratch space is passed in as `workspace`.

#include <cstdint>
#include <type_traits>

#include "spattn/csr.hpp"
#include "spattn/plan.hpp"

namespace spattn {

// Storage types for 16-bit floats; arithmetic happens in float.
struct bfloat16 {
  std::uint16_t bits;
};
struct float16 {
  std::uint16_t bits;
};

// Accumulation type: double for double inputs (so float64 results match a float64 reference to 1e-10),
// float for everything else.
template <typename T>
using accumulate_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

// The transposed pattern with, for each of its entries, the position of that entry in CSR order
// (see spattn::transpose): kernels that reduce over a column (dK, dV, SpMM's dB) walk it without atomics.
struct TransposedView {
  CsrView pattern;
  const index_t* permutation = nullptr;
};

struct AttentionDims {
  index_t batch = 0;       // B * H problems sharing the pattern
  index_t head_dim = 0;    // D of q and k
  index_t value_dim = 0;   // Dv of v and out
  index_t bias_heads = 0;  // 0: no bias; 1: bias [nnz] shared; H: bias [H, nnz]; batch: [B, H, nnz] (problem % it)
  index_t heads = 1;       // H: problem p is (batch p / H, head p % H); only strided layouts (below) use it
  index_t head_group = 1;  // query heads per k/v head (GQA/MQA): query head h reads k/v head h / head_group

  constexpr index_t kv_heads() const { return heads / head_group; }
  constexpr index_t kv_batch() const { return batch / head_group; }
};

// Where the rows of one attention operand ([B, H, N, dim], problem p = b * H + h) live, in elements:
// row n of problem p starts at (p / H) * batch_stride + ((p % H) / head_group) * head_stride + n * row_stride,
// and the last axis is contiguous (head_group > 1 for k and v under grouped-query attention: several query
// heads read one k/v head in place, with no repeat copy). The CPU attention kernels take these so that q, k and v can be strided views of
// one fused projection ([B, N, 3, H, D]) and out can be written in [B, N, H, D] order: no copies around
// the kernel. The contiguous [batch, N, dim] of the contract above is `contiguous(heads, N, dim)`.
struct OperandLayout {
  index_t batch_stride = 0;
  index_t head_stride = 0;
  index_t row_stride = 0;
  index_t head_group = 1;

  // `heads` query heads; an operand with head_group > 1 stores heads / head_group of them.
  static constexpr OperandLayout contiguous(index_t heads, index_t rows, index_t dim, index_t head_group = 1) {
    return {heads / head_group * rows * dim, rows * dim, dim, head_group};
  }
  // Offset of row 0 of `problem` (a query problem: b * heads + h).
  constexpr index_t problem_offset(index_t problem, index_t heads) const {
    return (problem / heads) * batch_stride + ((problem % heads) / head_group) * head_stride;
  }
};

// The layouts of the operands of the CPU attention kernels (grad_out is read by the backward only). The
// backward's gradients grad_q, grad_k and grad_v are always contiguous [batch, N, dim].
struct AttentionLayouts {
  OperandLayout q, k, v, out, grad_out;

  static constexpr AttentionLayouts contiguous(CsrView pattern, AttentionDims dims) {
    const index_t heads = dims.heads;
    return {OperandLayout::contiguous(heads, pattern.rows, dims.head_dim),
            OperandLayout::contiguous(heads, pattern.cols, dims.head_dim, dims.head_group),
            OperandLayout::contiguous(heads, pattern.cols, dims.value_dim, dims.head_group),
            OperandLayout::contiguous(heads, pattern.rows, dims.value_dim),
            OperandLayout::contiguous(heads, pattern.rows, dims.value_dim)};
  }
};

namespace cpu {

// ---- unfused -------------------------------------------------------------------------------------------
// out[p, e] = sum_d a[p, row(e), d] * b[p, col(e), d]
template <typename T>
void sddmm(CsrView pattern, const T* a, const T* b, T* out, index_t batch, index_t dim);
// grad_a[p, r] = sum_e grad[p, e] * b[p, col(e)];  grad_b[p, c] = sum_{e in column c} grad[p, e] * a[p, row(e)]
template <typename T>
void sddmm_backward(CsrView pattern, TransposedView transposed, const T* grad, const T* a, const T* b, T* grad_a,
                    T* grad_b, index_t batch, index_t dim);

// Row-wise softmax over each row's entries.
template <typename T>
void sparse_softmax(CsrView pattern, const T* values, T* out, index_t batch);
// grad_values = out * (grad - sum_row(grad * out))
template <typename T>
void sparse_softmax_backward(CsrView pattern, const T* grad, const T* out, T* grad_values, index_t batch);

// out[p, r] = sum_e values[p, e] * b[p, col(e)]
template <typename T>
void spmm(CsrView pattern, const T* values, const T* b, T* out, index_t batch, index_t dim);
// grad_values[p, e] = grad_out[p, row(e)] . b[p, col(e)];  grad_b = values^T @ grad_out (through transposed)
template <typename T>
void spmm_backward(CsrView pattern, TransposedView transposed, const T* grad_out, const T* values, const T* b,
                   T* grad_values, T* grad_b, index_t batch, index_t dim);

// ---- fused attention -----------------------------------------------------------------------------------
// out = softmax(scale * q k^T + bias on the pattern) v, with an online softmax per row; lse [batch, rows]
// gets each row's log-sum-exp of the biased, scaled scores. With an execution plan (`groups`, from
// build_plan; groups.groups == 0 for none) the rows of each group, which share their columns, run as one
// small dense attention problem (keys and values gathered once, register-blocked products); groups too
// small or too long for that, and every row without a plan, take the row-by-row path. Same results up to
// rounding.
template <typename T>
void attention_forward(CsrView pattern, GroupsView groups, const T* q, const T* k, const T* v, const T* bias,
                       AttentionDims dims, const AttentionLayouts& layouts, double scale, T* out,
                       accumulate_t<T>* lse);

// Contiguous operands, no plan.
template <typename T>
void attention_forward(CsrView pattern, const T* q, const T* k, const T* v, const T* bias, AttentionDims dims,
                       double scale, T* out, accumulate_t<T>* lse) {
  attention_forward(pattern, GroupsView{}, q, k, v, bias, dims, AttentionLayouts::contiguous(pattern, dims), scale,
                    out, lse);
}

// Scratch needed by attention_backward, in elements of accumulate_t<T>.
index_t attention_backward_workspace_size(CsrView pattern, AttentionDims dims);

// Gradients of attention_forward, probabilities recomputed from lse. grad_lse ([batch, rows], may be null for
// none) is the gradient reaching lse itself: since d lse_i / d s_ij = P_ij, it enters as
// dS_ij = P_ij * (dP_ij - rowsum(dO_i * O_i) + grad_lse_i); rows without entries ignore it. grad_bias
// ([bias_heads, nnz], may be null) is summed over the problems that share a bias head (none for a per-problem
// bias, bias_heads = batch). dK and dV reduce over the transposed pattern, except where a plan's group owns a
// column outright (no other group's rows use it): that group reduces it; under grouped-query attention both
// also sum over the head_group query heads of each k/v head, in a fixed order (no atomics). grad_q, grad_k,
// grad_v are contiguous [batch, N, dim] ([kv_batch, N, dim] for grad_k and grad_v) whatever `layouts` says
// of the inputs.
template <typename T>
void attention_backward(CsrView pattern, TransposedView transposed, GroupsView groups, const T* q, const T* k,
                        const T* v, const T* bias, const T* out, const T* grad_out, const accumulate_t<T>* lse,
                        const accumulate_t<T>* grad_lse, AttentionDims dims, const AttentionLayouts& layouts,
                        double scale, T* grad_q, T* grad_k, T* grad_v, T* grad_bias, accumulate_t<T>* workspace);

// Contiguous operands, no plan.
template <typename T>
void attention_backward(CsrView pattern, TransposedView transposed, const T* q, const T* k, const T* v,
                        const T* bias, const T* out, const T* grad_out, const accumulate_t<T>* lse,
                        const accumulate_t<T>* grad_lse, AttentionDims dims, double scale, T* grad_q, T* grad_k,
                        T* grad_v, T* grad_bias, accumulate_t<T>* workspace) {
  attention_backward(pattern, transposed, GroupsView{}, q, k, v, bias, out, grad_out, lse, grad_lse, dims,
                     AttentionLayouts::contiguous(pattern, dims), scale, grad_q, grad_k, grad_v, grad_bias, workspace);
}

}  // namespace cpu
}  // namespace spattn

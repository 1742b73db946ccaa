#pragma once
// The kernel contract shared by the CPU (spattn::cpu) and CUDA (spattn::cuda) backends.
//
// Every kernel is batched over `batch` independent problems that share one pattern (batch = B * H for
// multi-head attention, flattened). All arrays are contiguous, row-major, and owned by the caller:
//   dense operands   a [batch, pattern.rows, dim], b [batch, pattern.cols, dim]
//   attention        q [batch, rows, head_dim], k [batch, cols, head_dim], v [batch, cols, value_dim],
//                    out [batch, rows, value_dim], lse [batch, rows]
//   pattern values   [batch, nnz] in CSR order
//   bias             [bias_heads, nnz]; problem `bh` reads head bh % bias_heads (1 = shared by all heads)
// Rows without entries give zero outputs and zero gradients, and their log-sum-exp is -infinity.
// Kernels never allocate device memory; scratch space is passed in as `workspace`.

#include <cstdint>
#include <type_traits>

#include "spattn/csr.hpp"

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
  index_t bias_heads = 0;  // 0: no bias; 1: bias [nnz] shared; H: bias [H, nnz], head = problem % H
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
// out = softmax(scale * q k^T + bias on the pattern) v, with an online softmax per row; lse gets each row's
// log-sum-exp of the biased, scaled scores.
template <typename T>
void attention_forward(CsrView pattern, const T* q, const T* k, const T* v, const T* bias, AttentionDims dims,
                       double scale, T* out, accumulate_t<T>* lse);

// Scratch needed by attention_backward, in elements of accumulate_t<T>.
index_t attention_backward_workspace_size(CsrView pattern, AttentionDims dims);

// Gradients of attention_forward, probabilities recomputed from lse. grad_bias ([bias_heads, nnz], may be
// null) is summed over the problems that share a head. dK and dV reduce over the transposed pattern.
template <typename T>
void attention_backward(CsrView pattern, TransposedView transposed, const T* q, const T* k, const T* v,
                        const T* bias, const T* out, const T* grad_out, const accumulate_t<T>* lse,
                        AttentionDims dims, double scale, T* grad_q, T* grad_k, T* grad_v, T* grad_bias,
                        accumulate_t<T>* workspace);

}  // namespace cpu
}  // namespace spattn

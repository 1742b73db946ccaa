#pragma once
// The CUDA kernels: the contract of spattn/kernels.hpp (see there for shapes and semantics), for
// T = float, float16 and bfloat16 with float accumulation, on the caller's stream.
//
// Every pointer, including the pattern's row_offsets / col_indices and the transposed view, is device
// memory. Functions enqueue work on `stream` and return: no allocation, no host synchronisation, so every
// call may be captured in a CUDA graph. Launch errors throw spattn::Error; errors of the kernels themselves
// surface at the caller's next synchronisation, as for any CUDA library. The pattern must be well formed
// (spattn::validate), since the kernels read its offsets on the device without checking them.
// Rows without entries give zeros (and log-sum-exp -infinity); rows whose scores are all -infinity
// (a bias of -inf masks an entry) behave the same way. Nothing returns NaN for finite inputs.
// Determinism: no float atomics anywhere, so results are bitwise reproducible run to run.

#include <cstddef>

#include "spattn/cuda.hpp"
#include "spattn/kernels.hpp"
#include "spattn/plan.hpp"

namespace spattn::cuda {

// ---- unfused -------------------------------------------------------------------------------------------
template <typename T>
void sddmm(CsrView pattern, const T* a, const T* b, T* out, index_t batch, index_t dim, cudaStream_t stream);
template <typename T>
void sddmm_backward(CsrView pattern, TransposedView transposed, const T* grad, const T* a, const T* b, T* grad_a,
                    T* grad_b, index_t batch, index_t dim, cudaStream_t stream);

template <typename T>
void sparse_softmax(CsrView pattern, const T* values, T* out, index_t batch, cudaStream_t stream);
template <typename T>
void sparse_softmax_backward(CsrView pattern, const T* grad, const T* out, T* grad_values, index_t batch,
                             cudaStream_t stream);

template <typename T>
void spmm(CsrView pattern, const T* values, const T* b, T* out, index_t batch, index_t dim, cudaStream_t stream);
template <typename T>
void spmm_backward(CsrView pattern, TransposedView transposed, const T* grad_out, const T* values, const T* b,
                   T* grad_values, T* grad_b, index_t batch, index_t dim, cudaStream_t stream);

// ---- fused attention -----------------------------------------------------------------------------------
// head_dim and value_dim up to max_attention_dim (fast paths for 32, 64 and 128 when both are equal).
inline constexpr index_t max_attention_dim = 1024;

// q, k, v and out are read and written through `layouts` (spattn/kernels.hpp; dims.heads gives H), so that
// they can be strided views of one projection ([B, N, 3, H, D]) and out can be written in [B, N, H, Dv]
// order; lse is contiguous [batch, rows]. Vector loads are used where every row of an operand is aligned
// for them (base pointer and strides), element loads otherwise.
template <typename T>
void attention_forward(CsrView pattern, const T* q, const T* k, const T* v, const T* bias, AttentionDims dims,
                       const AttentionLayouts& layouts, double scale, T* out, accumulate_t<T>* lse,
                       cudaStream_t stream);

// Contiguous operands.
template <typename T>
void attention_forward(CsrView pattern, const T* q, const T* k, const T* v, const T* bias, AttentionDims dims,
                       double scale, T* out, accumulate_t<T>* lse, cudaStream_t stream) {
  attention_forward(pattern, q, k, v, bias, dims, AttentionLayouts::contiguous(pattern, dims), scale, out, lse,
                    stream);
}

// The same forward over the pattern's execution plan (spattn::build_plan of this pattern, its arrays on the
// device; every row in exactly one group): one thread block per (problem, group) gathers the group's keys
// and values into shared memory once and serves all of the group's rows from there; float16 and bfloat16
// with head dims up to 128 on sm_80 or newer multiply on tensor cores (the weights rounded to the storage
// type before P V, as flash attention does), float32 stays in float32. Same contract and
// semantics as attention_forward, results equal up to rounding. Head dims above max_grouped_attention_dim
// (or a device without the shared memory) run attention_forward instead. Like the pattern, the plan's
// contents are read on the device unchecked: they must come from build_plan. Operands through `layouts`, as
// attention_forward; the plan's schedule (groups.steps) is optional.
inline constexpr index_t max_grouped_attention_dim = 128;

template <typename T>
void attention_forward_grouped(CsrView pattern, GroupsView groups, const T* q, const T* k, const T* v,
                               const T* bias, AttentionDims dims, const AttentionLayouts& layouts, double scale,
                               T* out, accumulate_t<T>* lse, cudaStream_t stream);

// Contiguous operands.
template <typename T>
void attention_forward_grouped(CsrView pattern, GroupsView groups, const T* q, const T* k, const T* v,
                               const T* bias, AttentionDims dims, double scale, T* out, accumulate_t<T>* lse,
                               cudaStream_t stream) {
  attention_forward_grouped(pattern, groups, q, k, v, bias, dims, AttentionLayouts::contiguous(pattern, dims),
                            scale, out, lse, stream);
}

// Scratch needed by attention_backward, in floats: the row terms rowsum(grad_out * out) [batch, rows], a
// group index per row (2 floats each), for a bias gradient deterministic partial sums of it (about
// batch / 4 x nnz floats) and, under grouped-query attention (dims.head_group > 1), the tensor-core
// backward's dK and dV per query head [batch, cols, head_dim + value_dim] (summed per k/v head afterwards).
// Pass dims.bias_heads = 0 when no bias gradient is wanted. Unlike the CPU version it takes nnz explicitly:
// the view's arrays live on the device, and this runs on the host. The workspace must be 8-byte aligned for
// the tensor-core path of the overload with a plan.
index_t attention_backward_workspace_size(CsrView pattern, index_t nnz, AttentionDims dims);

// grad_bias may be null (no bias gradient wanted); it is summed over the problems sharing a bias head, in a
// fixed order (nothing to sum for a per-problem bias, bias_heads = batch). grad_lse ([batch, rows], may be
// null for none) is the gradient reaching lse itself: d lse_i / d s_ij = P_ij, so it enters as
// dS_ij = P_ij (dP_ij - rowsum(dO_i O_i) + grad_lse_i). dK and dV walk the transposed pattern; under
// grouped-query attention (dims.head_group = g > 1) each k/v head's dK and dV sum its g query heads', in a
// fixed order.
//
// With the pattern's execution plan (as attention_forward_grouped; an empty GroupsView for none): for float16
// and bfloat16 with head dims up to 128 on sm_80 or newer, a tensor-core kernel walks the plan's groups: it
// computes dQ and the bias gradient, and dK and dV of every column whose entries all lie in one group of at
// most 64 rows (every key of a Swin window); a column pass takes the other columns. Deterministic either way.
// q, k, v, out and grad_out are read through `layouts` (as attention_forward); grad_q is contiguous
// [batch, rows, head_dim], grad_k and grad_v contiguous [batch / head_group, cols, dim].
template <typename T>
void attention_backward(CsrView pattern, TransposedView transposed, GroupsView groups, const T* q, const T* k,
                        const T* v, const T* bias, const T* out, const T* grad_out, const accumulate_t<T>* lse,
                        const accumulate_t<T>* grad_lse, AttentionDims dims, const AttentionLayouts& layouts,
                        double scale, T* grad_q, T* grad_k, T* grad_v, T* grad_bias, accumulate_t<T>* workspace,
                        cudaStream_t stream);

// Contiguous operands, with a plan.
template <typename T>
void attention_backward(CsrView pattern, TransposedView transposed, GroupsView groups, const T* q, const T* k,
                        const T* v, const T* bias, const T* out, const T* grad_out, const accumulate_t<T>* lse,
                        const accumulate_t<T>* grad_lse, AttentionDims dims, double scale, T* grad_q, T* grad_k,
                        T* grad_v, T* grad_bias, accumulate_t<T>* workspace, cudaStream_t stream) {
  attention_backward(pattern, transposed, groups, q, k, v, bias, out, grad_out, lse, grad_lse, dims,
                     AttentionLayouts::contiguous(pattern, dims), scale, grad_q, grad_k, grad_v, grad_bias, workspace,
                     stream);
}

// Contiguous operands, no plan.
template <typename T>
void attention_backward(CsrView pattern, TransposedView transposed, const T* q, const T* k, const T* v,
                        const T* bias, const T* out, const T* grad_out, const accumulate_t<T>* lse,
                        const accumulate_t<T>* grad_lse, AttentionDims dims, double scale, T* grad_q, T* grad_k,
                        T* grad_v, T* grad_bias, accumulate_t<T>* workspace, cudaStream_t stream) {
  attention_backward(pattern, transposed, GroupsView{}, q, k, v, bias, out, grad_out, lse, grad_lse, dims, scale,
                     grad_q, grad_k, grad_v, grad_bias, workspace, stream);
}

// Dynamic shared memory per block, in bytes, of the tensor-core kernel over the plan's schedule (backward:
// the backward's, else the forward's) for these head dims and storage type size (2 for float16 / bfloat16);
// for benchmarks and reports. (Host code; no device is touched.)
index_t tensor_core_shared_bytes(bool backward, index_t head_dim, index_t value_dim, index_t storage_bytes);

// ---- cuSPARSE baseline (float32; needs a build with cuSPARSE, see cusparse_version()) ---------------------
// The same SDDMM and SpMM through cusparseSDDMM / cusparseSpMM, one library call per problem (cuSPARSE's
// strided batches cannot share column indices between problems with different values). nnz is passed
// explicitly because cuSPARSE needs it on the host. The workspace is device memory of at least the
// queried size; the handle is created once per device and host thread and set to `stream`.
std::size_t cusparse_sddmm_workspace_size(CsrView pattern, index_t nnz, const float* a, const float* b,
                                          float* out, index_t batch, index_t dim);
void cusparse_sddmm(CsrView pattern, index_t nnz, const float* a, const float* b, float* out, index_t batch,
                    index_t dim, void* workspace, std::size_t workspace_bytes, cudaStream_t stream);
std::size_t cusparse_spmm_workspace_size(CsrView pattern, index_t nnz, const float* values, const float* b,
                                         float* out, index_t batch, index_t dim);
void cusparse_spmm(CsrView pattern, index_t nnz, const float* values, const float* b, float* out, index_t batch,
                   index_t dim, void* workspace, std::size_t workspace_bytes, cudaStream_t stream);

}  // namespace spattn::cuda

#pragma once
// The two building blocks of the unfused ops. One warp per (problem, row); lanes split the dense
// dimension, so any dim works.
//   entry_dot:   out[p, e] = x[p, row(e)] . y[p, col(e)]                         (SDDMM, dValues of SpMM)
//   gather_sum:  out[p, r] = sum_{e in row r} w[p, slot(e)] * y[p, col(e)]       (SpMM, dA, dB of SDDMM,
//                slot(e) = e, or permutation[e] on the transposed pattern        dB of SpMM)
// Every output element is written (rows without entries get zeros), so outputs may be uninitialised.

#include "device_types.cuh"

namespace spattn::cuda::detail {

template <typename D>
__global__ void __launch_bounds__(kThreadsPerBlock)
    entry_dot_kernel(index_t rows, const index_t* __restrict__ row_offsets, const index_t* __restrict__ col_indices,
                     const D* __restrict__ x, const D* __restrict__ y, D* __restrict__ out, index_t batch,
                     index_t cols, index_t dim) {
  const index_t nnz = row_offsets[rows];
  const int lane = threadIdx.x % 32;
  const index_t items = batch * rows;
  for (index_t item = first_item<32>(); item < items; item += item_stride<32>()) {
    const index_t problem = item / rows, row = item % rows;
    const D* x_row = x + item * dim;
    const D* y_problem = y + problem * cols * dim;
    D* out_problem = out + problem * nnz;
    const index_t end = row_offsets[row + 1];
    for (index_t entry = row_offsets[row]; entry < end; ++entry) {
      const D* y_row = y_problem + col_indices[entry] * dim;
      float partial = 0.f;
      for (index_t d = lane; d < dim; d += 32) partial += to_float(x_row[d]) * to_float(y_row[d]);
      partial = group_sum<32>(partial, kFullWarp);
      if (lane == 0) out_problem[entry] = from_float<D>(partial);
    }
  }
}

// rows/row_offsets/col_indices describe the pattern walked (the transposed one for column reductions),
// weights are [batch, nnz] in the original CSR order, y is [batch, cols, dim], out [batch, rows, dim].
template <typename D>
__global__ void __launch_bounds__(kThreadsPerBlock)
    gather_sum_kernel(index_t rows, const index_t* __restrict__ row_offsets, const index_t* __restrict__ col_indices,
                      const index_t* __restrict__ permutation, const D* __restrict__ weights,
                      const D* __restrict__ y, D* __restrict__ out, index_t batch, index_t cols, index_t dim) {
  const index_t nnz = row_offsets[rows];
  const int lane = threadIdx.x % 32;
  const index_t items = batch * rows;
  for (index_t item = first_item<32>(); item < items; item += item_stride<32>()) {
    const index_t problem = item / rows, row = item % rows;
    const D* weights_problem = weights + problem * nnz;
    const D* y_problem = y + problem * cols * dim;
    D* out_row = out + item * dim;
    const index_t begin = row_offsets[row], end = row_offsets[row + 1];
    // Lanes own dims d0 + lane; entries are visited in order, so each sum has a fixed order.
    for (index_t d0 = 0; d0 < dim; d0 += 32) {
      const index_t d = d0 + lane;
      const bool active = d < dim;
      float sum = 0.f;
      for (index_t entry = begin; entry < end; ++entry) {
        const index_t slot = permutation == nullptr ? entry : permutation[entry];
        const float weight = to_float(weights_problem[slot]);
        if (active) sum += weight * to_float(y_problem[col_indices[entry] * dim + d]);
      }
      if (active) out_row[d] = from_float<D>(sum);
    }
  }
}

template <typename D>
void launch_entry_dot(CsrView pattern, const D* x, const D* y, D* out, index_t batch, index_t dim,
                      cudaStream_t stream) {
  const index_t items = batch * pattern.rows;
  if (items == 0) return;
  entry_dot_kernel<D><<<blocks_for(items, kThreadsPerBlock / 32), kThreadsPerBlock, 0, stream>>>(
      pattern.rows, pattern.row_offsets, pattern.col_indices, x, y, out, batch, pattern.cols, dim);
  SPATTN_CUDA_CHECK_LAUNCH();
}

// permutation: null to read weights in the walked pattern's own order.
template <typename D>
void launch_gather_sum(CsrView pattern, const index_t* permutation, const D* weights, const D* y, D* out,
                       index_t batch, index_t dim, cudaStream_t stream) {
  const index_t items = batch * pattern.rows;
  if (items == 0 || dim == 0) return;
  gather_sum_kernel<D><<<blocks_for(items, kThreadsPerBlock / 32), kThreadsPerBlock, 0, stream>>>(
      pattern.rows, pattern.row_offsets, pattern.col_indices, permutation, weights, y, out, batch, pattern.cols,
      dim);
  SPATTN_CUDA_CHECK_LAUNCH();
}

}  // namespace spattn::cuda::detail

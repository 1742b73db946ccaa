// SpMM on the CPU: pattern values times a dense matrix, and the gradients.

#include "cpu_common.hpp"

namespace spattn::cpu {

using detail::parallel_for;

template <typename T>
void spmm(CsrView pattern, const T* values, const T* b, T* out, index_t batch, index_t dim) {
  using Acc = accumulate_t<T>;
  const index_t rows = pattern.rows, cols = pattern.cols, nnz = pattern.nnz();
  parallel_for<Acc>(batch * rows, detail::mean_row_length(pattern) * dim, dim, [&](index_t item, Acc* sum) {
    const index_t problem = item / rows, row = item % rows;
    const T* b_problem = b + problem * cols * dim;
    const T* values_problem = values + problem * nnz;
    detail::zero_row(sum, dim);
    for (index_t e = pattern.row_offsets[row]; e < pattern.row_offsets[row + 1]; ++e) {
      detail::axpy(sum, detail::load(values_problem[e]), b_problem + pattern.col_indices[e] * dim, dim);
    }
    detail::store_row(out + (problem * rows + row) * dim, sum, Acc(1), dim);
  });
}

// grad_values walks rows of the pattern and grad_b rows of the transposed pattern: one writer per output
// row, no atomics. Either output may be null to skip it.
template <typename T>
void spmm_backward(CsrView pattern, TransposedView transposed, const T* grad_out, const T* values, const T* b,
                   T* grad_values, T* grad_b, index_t batch, index_t dim) {
  using Acc = accumulate_t<T>;
  const index_t rows = pattern.rows, cols = pattern.cols, nnz = pattern.nnz();
  const index_t work = detail::mean_row_length(pattern) * dim;
  if (grad_values != nullptr) {
    parallel_for<Acc>(batch * rows, work, dim, [&](index_t item, Acc* grad_row) {
      const index_t problem = item / rows, row = item % rows;
      const T* b_problem = b + problem * cols * dim;
      detail::load_row(grad_row, grad_out + (problem * rows + row) * dim, dim);
      for (index_t e = pattern.row_offsets[row]; e < pattern.row_offsets[row + 1]; ++e) {
        grad_values[problem * nnz + e] =
            detail::store<T>(detail::dot(grad_row, b_problem + pattern.col_indices[e] * dim, dim));
      }
    });
  }
  if (grad_b != nullptr) {
    const CsrView& t = transposed.pattern;
    parallel_for<Acc>(batch * cols, work, dim, [&](index_t item, Acc* sum) {
      const index_t problem = item / cols, col = item % cols;
      const T* grad_out_problem = grad_out + problem * rows * dim;
      const T* values_problem = values + problem * nnz;
      detail::zero_row(sum, dim);
      for (index_t k = t.row_offsets[col]; k < t.row_offsets[col + 1]; ++k) {
        detail::axpy(sum, detail::load(values_problem[transposed.permutation[k]]),
                     grad_out_problem + t.col_indices[k] * dim, dim);
      }
      detail::store_row(grad_b + (problem * cols + col) * dim, sum, Acc(1), dim);
    });
  }
}

#define SPATTN_INSTANTIATE(T)                                                  \
  template void spmm<T>(CsrView, const T*, const T*, T*, index_t, index_t);    \
  template void spmm_backward<T>(CsrView, TransposedView, const T*, const T*, const T*, T*, T*, index_t, index_t);
SPATTN_INSTANTIATE(float)
SPATTN_INSTANTIATE(double)
SPATTN_INSTANTIATE(bfloat16)
#undef SPATTN_INSTANTIATE

}  // namespace spattn::cpu

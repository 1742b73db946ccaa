// SDDMM on the CPU: dense-dense products sampled on the pattern, and their gradients.

#include "cpu_common.hpp"

namespace spattn::cpu {

using detail::dot;
using detail::parallel_for;

template <typename T>
void sddmm(CsrView pattern, const T* a, const T* b, T* out, index_t batch, index_t dim) {
  using Acc = accumulate_t<T>;
  const index_t rows = pattern.rows, cols = pattern.cols, nnz = pattern.nnz();
  parallel_for<Acc>(batch * rows, detail::mean_row_length(pattern) * dim, 0, [&](index_t item, Acc*) {
    const index_t problem = item / rows, row = item % rows;
    const T* a_row = a + (problem * rows + row) * dim;
    const T* b_problem = b + problem * cols * dim;
    T* out_problem = out + problem * nnz;
    for (index_t e = pattern.row_offsets[row]; e < pattern.row_offsets[row + 1]; ++e) {
      out_problem[e] = detail::store<T>(dot(a_row, b_problem + pattern.col_indices[e] * dim, dim));
    }
  });
}

// grad_a is an SpMM of grad with b; grad_b the same through the transposed pattern, so each output row has
// exactly one writer and no atomics are needed. Either output may be null to skip it.
template <typename T>
void sddmm_backward(CsrView pattern, TransposedView transposed, const T* grad, const T* a, const T* b, T* grad_a,
                    T* grad_b, index_t batch, index_t dim) {
  if (grad_a != nullptr) detail::weighted_row_sums(pattern, nullptr, grad, b, grad_a, batch, dim);
  if (grad_b != nullptr) {
    detail::weighted_row_sums(transposed.pattern, transposed.permutation, grad, a, grad_b, batch, dim);
  }
}

#define SPATTN_INSTANTIATE(T)                                                                                 \
  template void sddmm<T>(CsrView, const T*, const T*, T*, index_t, index_t);                                  \
  template void sddmm_backward<T>(CsrView, TransposedView, const T*, const T*, const T*, T*, T*, index_t, index_t);
SPATTN_INSTANTIATE(float)
SPATTN_INSTANTIATE(double)
SPATTN_INSTANTIATE(bfloat16)
#undef SPATTN_INSTANTIATE

}  // namespace spattn::cpu

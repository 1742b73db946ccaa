// SpMM on the CPU: pattern values times a dense matrix, and the gradients.

#include "cpu_common.hpp"

namespace spattn::cpu {

template <typename T>
void spmm(CsrView pattern, const T* values, const T* b, T* out, index_t batch, index_t dim) {
  detail::weighted_row_sums(pattern, nullptr, values, b, out, batch, dim);
}

// grad_values is an SDDMM of grad_out with b; grad_b a weighted row sum through the transposed pattern (one
// writer per output row, no atomics). Either output may be null to skip it.
template <typename T>
void spmm_backward(CsrView pattern, TransposedView transposed, const T* grad_out, const T* values, const T* b,
                   T* grad_values, T* grad_b, index_t batch, index_t dim) {
  if (grad_values != nullptr) sddmm(pattern, grad_out, b, grad_values, batch, dim);
  if (grad_b != nullptr) {
    detail::weighted_row_sums(transposed.pattern, transposed.permutation, values, grad_out, grad_b, batch, dim);
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

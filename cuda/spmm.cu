// SpMM (pattern values times a dense matrix) and its backward.

#include "row_kernels.cuh"
#include "spattn/cuda_kernels.hpp"

namespace spattn::cuda {

template <typename T>
void spmm(CsrView pattern, const T* values, const T* b, T* out, index_t batch, index_t dim, cudaStream_t stream) {
  using detail::to_device;
  detail::launch_gather_sum(pattern, nullptr, to_device(values), to_device(b), to_device(out), batch, dim, stream);
}

template <typename T>
void spmm_backward(CsrView pattern, TransposedView transposed, const T* grad_out, const T* values, const T* b,
                   T* grad_values, T* grad_b, index_t batch, index_t dim, cudaStream_t stream) {
  using detail::to_device;
  detail::launch_entry_dot(pattern, to_device(grad_out), to_device(b), to_device(grad_values), batch, dim, stream);
  // grad_b = values^T @ grad_out, one output row per column of the pattern: no atomics.
  detail::launch_gather_sum(transposed.pattern, transposed.permutation, to_device(values), to_device(grad_out),
                            to_device(grad_b), batch, dim, stream);
}

#define SPATTN_INSTANTIATE(T)                                                                                 \
  template void spmm<T>(CsrView, const T*, const T*, T*, index_t, index_t, cudaStream_t);                    \
  template void spmm_backward<T>(CsrView, TransposedView, const T*, const T*, const T*, T*, T*, index_t,     \
                                 index_t, cudaStream_t);
SPATTN_INSTANTIATE(float)
SPATTN_INSTANTIATE(float16)
SPATTN_INSTANTIATE(bfloat16)
#undef SPATTN_INSTANTIATE

}  // namespace spattn::cuda

// SDDMM and its backward: products of dense rows sampled on the pattern.

#include "row_kernels.cuh"
#include "spattn/cuda_kernels.hpp"

namespace spattn::cuda {

template <typename T>
void sddmm(CsrView pattern, const T* a, const T* b, T* out, index_t batch, index_t dim, cudaStream_t stream) {
  using detail::to_device;
  detail::launch_entry_dot(pattern, to_device(a), to_device(b), to_device(out), batch, dim, stream);
}

template <typename T>
void sddmm_backward(CsrView pattern, TransposedView transposed, const T* grad, const T* a, const T* b, T* grad_a,
                    T* grad_b, index_t batch, index_t dim, cudaStream_t stream) {
  using detail::to_device;
  // grad_a: rows of the pattern; grad_b: columns, walked through the transpose so no two threads add
  // into the same output.
  detail::launch_gather_sum(pattern, nullptr, to_device(grad), to_device(b), to_device(grad_a), batch, dim, stream);
  detail::launch_gather_sum(transposed.pattern, transposed.permutation, to_device(grad), to_device(a),
                            to_device(grad_b), batch, dim, stream);
}

#define SPATTN_INSTANTIATE(T)                                                                                 \
  template void sddmm<T>(CsrView, const T*, const T*, T*, index_t, index_t, cudaStream_t);                   \
  template void sddmm_backward<T>(CsrView, TransposedView, const T*, const T*, const T*, T*, T*, index_t,    \
                                  index_t, cudaStream_t);
SPATTN_INSTANTIATE(float)
SPATTN_INSTANTIATE(float16)
SPATTN_INSTANTIATE(bfloat16)
#undef SPATTN_INSTANTIATE

}  // namespace spattn::cuda

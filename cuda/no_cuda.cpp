// Stand-in for the CUDA backend in builds without CUDA (SPATTN_CUDA=OFF or no compiler found): every entry
// point of spattn/cuda.hpp and spattn/cuda_kernels.hpp exists, so callers compile, and kernels throw.

#include "spattn/cuda.hpp"
#include "spattn/cuda_kernels.hpp"
#include "spattn/error.hpp"

namespace spattn::cuda {
namespace {
[[noreturn]] void no_cuda() { throw Error("spattn was built without CUDA support"); }
}  // namespace

bool is_available() { return false; }
int device_count() { return 0; }
std::string device_name(int) { return "spattn was built without CUDA support"; }
int cusparse_version() { return 0; }
std::string cusparse_load_error() { return "spattn was built without CUDA support"; }

template <typename T>
void sddmm(CsrView, const T*, const T*, T*, index_t, index_t, cudaStream_t) {
  no_cuda();
}
template <typename T>
void sddmm_backward(CsrView, TransposedView, const T*, const T*, const T*, T*, T*, index_t, index_t, cudaStream_t) {
  no_cuda();
}
template <typename T>
void sparse_softmax(CsrView, const T*, T*, index_t, cudaStream_t) {
  no_cuda();
}
template <typename T>
void sparse_softmax_backward(CsrView, const T*, const T*, T*, index_t, cudaStream_t) {
  no_cuda();
}
template <typename T>
void spmm(CsrView, const T*, const T*, T*, index_t, index_t, cudaStream_t) {
  no_cuda();
}
template <typename T>
void spmm_backward(CsrView, TransposedView, const T*, const T*, const T*, T*, T*, index_t, index_t, cudaStream_t) {
  no_cuda();
}
template <typename T>
void attention_forward(CsrView, const T*, const T*, const T*, const T*, AttentionDims, const AttentionLayouts&,
                       double, T*, accumulate_t<T>*, cudaStream_t) {
  no_cuda();
}
template <typename T>
void attention_forward_grouped(CsrView, GroupsView, const T*, const T*, const T*, const T*, AttentionDims,
                               const AttentionLayouts&, double, T*, accumulate_t<T>*, cudaStream_t) {
  no_cuda();
}
index_t attention_backward_workspace_size(CsrView, index_t, AttentionDims) { no_cuda(); }
template <typename T>
void attention_backward(CsrView, TransposedView, GroupsView, const T*, const T*, const T*, const T*, const T*,
                        const T*, const accumulate_t<T>*, const accumulate_t<T>*, AttentionDims,
                        const AttentionLayouts&, double, T*, T*, T*, T*, accumulate_t<T>*, cudaStream_t) {
  no_cuda();
}
index_t tensor_core_shared_bytes(bool, index_t, index_t, index_t) { no_cuda(); }

#define SPATTN_INSTANTIATE(T)                                                                                  \
  template void sddmm<T>(CsrView, const T*, const T*, T*, index_t, index_t, cudaStream_t);                    \
  template void sddmm_backward<T>(CsrView, TransposedView, const T*, const T*, const T*, T*, T*, index_t,     \
                                  index_t, cudaStream_t);                                                     \
  template void sparse_softmax<T>(CsrView, const T*, T*, index_t, cudaStream_t);                              \
  template void sparse_softmax_backward<T>(CsrView, const T*, const T*, T*, index_t, cudaStream_t);           \
  template void spmm<T>(CsrView, const T*, const T*, T*, index_t, index_t, cudaStream_t);                     \
  template void spmm_backward<T>(CsrView, TransposedView, const T*, const T*, const T*, T*, T*, index_t,      \
                                 index_t, cudaStream_t);                                                      \
  template void attention_forward<T>(CsrView, const T*, const T*, const T*, const T*, AttentionDims,          \
                                     const AttentionLayouts&, double, T*, accumulate_t<T>*, cudaStream_t);    \
  template void attention_forward_grouped<T>(CsrView, GroupsView, const T*, const T*, const T*, const T*,     \
                                             AttentionDims, const AttentionLayouts&, double, T*,              \
                                             accumulate_t<T>*, cudaStream_t);                                 \
  template void attention_backward<T>(CsrView, TransposedView, GroupsView, const T*, const T*, const T*,      \
                                      const T*, const T*, const T*, const accumulate_t<T>*,                   \
                                      const accumulate_t<T>*, AttentionDims, const AttentionLayouts&, double, \
                                      T*, T*, T*, T*, accumulate_t<T>*, cudaStream_t);
SPATTN_INSTANTIATE(float)
SPATTN_INSTANTIATE(float16)
SPATTN_INSTANTIATE(bfloat16)
#undef SPATTN_INSTANTIATE

std::size_t cusparse_sddmm_workspace_size(CsrView, index_t, const float*, const float*, float*, index_t, index_t) {
  no_cuda();
}
void cusparse_sddmm(CsrView, index_t, const float*, const float*, float*, index_t, index_t, void*, std::size_t,
                    cudaStream_t) {
  no_cuda();
}
std::size_t cusparse_spmm_workspace_size(CsrView, index_t, const float*, const float*, float*, index_t, index_t) {
  no_cuda();
}
void cusparse_spmm(CsrView, index_t, const float*, const float*, float*, index_t, index_t, void*, std::size_t,
                   cudaStream_t) {
  no_cuda();
}

}  // namespace spattn::cuda

// Fused sparse attention backward on the CPU.
//
// Workspace layout (attention_backward_workspace_size): two [batch, nnz] arrays of accumulate_t<T>, the
// probabilities P and the score gradients dS = P * (dO . v - delta), in CSR order. The row pass recomputes
// P from the log-sum-exp, writes both arrays and dQ; dBias is a column sum of dS over the problems sharing a
// head; dK and dV read P and dS back through the transposed pattern. Storing them (instead of keeping only
// delta = rowsum(dO * O)) means the column pass does no dot products at all, which halves the backward's
// arithmetic, and every output row still has exactly one writer, so no atomics anywhere.

#include <algorithm>
#include <vector>

#include "cpu_common.hpp"
#include "spattn/checked_math.hpp"

namespace spattn::cpu {

index_t attention_backward_workspace_size(CsrView pattern, AttentionDims dims) {
  return checked_mul(2, checked_mul(dims.batch, pattern.nnz(), "attention backward workspace"),
                     "attention backward workspace");
}

// The kernel twice: once for the baseline target of the build and once for AVX2 + FMA, chosen at run time
// (the build stays portable, without -march=native, yet the inner loops get 8-wide fused multiply-adds).
namespace {
namespace baseline {
constexpr bool native_float8 = false;  // 8-float vectors are lowered to SSE pairs here: slow (see the kernels)
#include "attention_backward_kernel.inc"
#include "attention_backward_grouped_kernel.inc"
}  // namespace baseline
#if SPATTN_CPU_DISPATCH_AVX2
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
constexpr bool native_float8 = true;
#include "attention_backward_kernel.inc"
#include "attention_backward_grouped_kernel.inc"
}  // namespace avx2
#pragma GCC pop_options
#endif
}  // namespace

// The plan's grouped kernel when there is a plan, the row-by-row kernel otherwise, each in the copy for the
// head dims (SPATTN_DISPATCH_DIM, cpu_common.hpp).
#define SPATTN_DISPATCH(ISA)                                                                                      \
  if (groups.groups > 0) {                                                                                         \
    SPATTN_DISPATCH_DIM(ISA::attention_backward_grouped_kernel, pattern, transposed, groups, q, k, v, bias, out,   \
                        grad_out, lse, grad_lse, dims, layouts, scale, grad_q, grad_k, grad_v, grad_bias,          \
                        workspace)                                                                                 \
  }                                                                                                                \
  SPATTN_DISPATCH_DIM(ISA::attention_backward_kernel, pattern, transposed, q, k, v, bias, out, grad_out, lse,       \
                      grad_lse, dims, layouts, scale, grad_q, grad_k, grad_v, grad_bias, workspace)

template <typename T>
void attention_backward(CsrView pattern, TransposedView transposed, GroupsView groups, const T* q, const T* k,
                        const T* v, const T* bias, const T* out, const T* grad_out, const accumulate_t<T>* lse,
                        const accumulate_t<T>* grad_lse, AttentionDims dims, const AttentionLayouts& layouts,
                        double scale, T* grad_q, T* grad_k, T* grad_v, T* grad_bias, accumulate_t<T>* workspace) {
#if SPATTN_CPU_DISPATCH_AVX2
  if (detail::cpu_has_avx2_fma()) {
    SPATTN_DISPATCH(avx2)
  }
#endif
  SPATTN_DISPATCH(baseline)
}
#undef SPATTN_DISPATCH

#define SPATTN_INSTANTIATE(T)                                                                                  \
  template void attention_backward<T>(CsrView, TransposedView, GroupsView, const T*, const T*, const T*, const T*, \
                                      const T*, const T*, const accumulate_t<T>*, const accumulate_t<T>*,        \
                                      AttentionDims, const AttentionLayouts&, double, T*, T*, T*, T*,            \
                                      accumulate_t<T>*);
SPATTN_INSTANTIATE(float)
SPATTN_INSTANTIATE(double)
SPATTN_INSTANTIATE(bfloat16)
#undef SPATTN_INSTANTIATE

}  // namespace spattn::cpu

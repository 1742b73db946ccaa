// Fused sparse attention forward on the CPU: per (problem, row), an online softmax over the row's entries.
//
// Scores are computed a block of entries at a time into a small stack buffer; the running maximum and the
// output accumulator are rescaled once per block instead of once per entry, which keeps the inner loops
// plain dot products and axpys (vectorised) while never holding more than one block of scores.

#include <algorithm>

#include "cpu_common.hpp"

namespace spattn::cpu {

namespace {
constexpr index_t block_entries = 64;
}

// The kernel twice: once for the baseline target of the build and once for AVX2 + FMA, chosen at run time
// (the build stays portable, without -march=native, yet the inner loops get 8-wide fused multiply-adds).
namespace {
namespace baseline {
constexpr bool native_float8 = false;  // 8-float vectors are lowered to SSE pairs here: slow (see the kernels)
#include "attention_forward_kernel.inc"
#include "attention_forward_grouped_kernel.inc"
}  // namespace baseline
#if SPATTN_CPU_DISPATCH_AVX2
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
constexpr bool native_float8 = true;
#include "attention_forward_kernel.inc"
#include "attention_forward_grouped_kernel.inc"
}  // namespace avx2
#pragma GCC pop_options
#endif
}  // namespace

// The plan's grouped kernel when there is a plan, the row-by-row kernel otherwise, each in the copy for the
// head dims (SPATTN_DISPATCH_DIM, cpu_common.hpp).
#define SPATTN_DISPATCH(ISA)                                                                                  \
  if (groups.groups > 0) {                                                                                     \
    SPATTN_DISPATCH_DIM(ISA::attention_forward_grouped_kernel, pattern, groups, q, k, v, bias, dims, layouts,  \
                        scale, out, lse)                                                                       \
  }                                                                                                            \
  SPATTN_DISPATCH_DIM(ISA::attention_forward_kernel, pattern, q, k, v, bias, dims, layouts, scale, out, lse)

template <typename T>
void attention_forward(CsrView pattern, GroupsView groups, const T* q, const T* k, const T* v, const T* bias,
                       AttentionDims dims, const AttentionLayouts& layouts, double scale, T* out,
                       accumulate_t<T>* lse) {
#if SPATTN_CPU_DISPATCH_AVX2
  if (detail::cpu_has_avx2_fma()) {
    SPATTN_DISPATCH(avx2)
  }
#endif
  SPATTN_DISPATCH(baseline)
}
#undef SPATTN_DISPATCH

#define SPATTN_INSTANTIATE(T)                                                                                  \
  template void attention_forward<T>(CsrView, GroupsView, const T*, const T*, const T*, const T*, AttentionDims, \
                                     const AttentionLayouts&, double, T*, accumulate_t<T>*);
SPATTN_INSTANTIATE(float)
SPATTN_INSTANTIATE(double)
SPATTN_INSTANTIATE(bfloat16)
#undef SPATTN_INSTANTIATE

}  // namespace spattn::cpu

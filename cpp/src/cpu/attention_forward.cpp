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
#include "attention_forward_kernel.inc"
}  // namespace baseline
#if SPATTN_CPU_DISPATCH_AVX2
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
#include "attention_forward_kernel.inc"
}  // namespace avx2
#pragma GCC pop_options
#endif
}  // namespace

// Common head dims get a copy with the dim fixed at compile time; any other dim takes the generic copy.
#define SPATTN_DISPATCH_DIM(ISA)                                                                         \
  switch (dims.head_dim == dims.value_dim ? dims.head_dim : 0) {                                         \
    case 32: return ISA::attention_forward_kernel<T, 32>(pattern, q, k, v, bias, dims, scale, out, lse); \
    case 64: return ISA::attention_forward_kernel<T, 64>(pattern, q, k, v, bias, dims, scale, out, lse); \
    default: return ISA::attention_forward_kernel<T, 0>(pattern, q, k, v, bias, dims, scale, out, lse);  \
  }

template <typename T>
void attention_forward(CsrView pattern, const T* q, const T* k, const T* v, const T* bias, AttentionDims dims,
                       double scale, T* out, accumulate_t<T>* lse) {
#if SPATTN_CPU_DISPATCH_AVX2
  if (detail::cpu_has_avx2_fma()) {
    SPATTN_DISPATCH_DIM(avx2)
  }
#endif
  SPATTN_DISPATCH_DIM(baseline)
}
#undef SPATTN_DISPATCH_DIM

#define SPATTN_INSTANTIATE(T)                                                                                  \
  template void attention_forward<T>(CsrView, const T*, const T*, const T*, const T*, AttentionDims, double, T*, \
                                     accumulate_t<T>*);
SPATTN_INSTANTIATE(float)
SPATTN_INSTANTIATE(double)
SPATTN_INSTANTIATE(bfloat16)
#undef SPATTN_INSTANTIATE

}  // namespace spattn::cpu

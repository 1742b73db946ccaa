// Row-wise softmax over each row's entries on the CPU, and its gradient.

#include <algorithm>

#include "cpu_common.hpp"

namespace spattn::cpu {

using detail::parallel_for;

// A row whose entries are all -infinity (masked out through the scores) has no distribution: it gets zeros,
// like a row without entries, instead of the NaN that exp(-inf - -inf) would give.
template <typename T>
void sparse_softmax(CsrView pattern, const T* values, T* out, index_t batch) {
  using Acc = accumulate_t<T>;
  const index_t rows = pattern.rows, nnz = pattern.nnz();
  parallel_for<Acc>(batch * rows, detail::mean_row_length(pattern), 0, [&](index_t item, Acc*) {
    const index_t problem = item / rows, row = item % rows;
    const index_t begin = problem * nnz + pattern.row_offsets[row];
    const index_t end = problem * nnz + pattern.row_offsets[row + 1];
    Acc maximum = detail::negative_infinity<T>;
    for (index_t e = begin; e < end; ++e) maximum = std::max(maximum, Acc(detail::load(values[e])));
    if (maximum == detail::negative_infinity<T>) {
      // std::max skips NaN, so a row of NaN (and -inf) values lands here too: NaN in, NaN out.
      bool poisoned = false;
      for (index_t e = begin; e < end; ++e) poisoned |= std::isnan(Acc(detail::load(values[e])));
      if (!poisoned) {
        detail::zero_output(out + begin, end - begin);
        return;
      }
    }
    Acc sum = 0;
    for (index_t e = begin; e < end; ++e) sum += std::exp(Acc(detail::load(values[e])) - maximum);
    const Acc inverse = Acc(1) / sum;
    for (index_t e = begin; e < end; ++e) {
      out[e] = detail::store<T>(std::exp(Acc(detail::load(values[e])) - maximum) * inverse);
    }
  });
}

template <typename T>
void sparse_softmax_backward(CsrView pattern, const T* grad, const T* out, T* grad_values, index_t batch) {
  using Acc = accumulate_t<T>;
  const index_t rows = pattern.rows, nnz = pattern.nnz();
  parallel_for<Acc>(batch * rows, detail::mean_row_length(pattern), 0, [&](index_t item, Acc*) {
    const index_t problem = item / rows, row = item % rows;
    const index_t begin = problem * nnz + pattern.row_offsets[row];
    const index_t end = problem * nnz + pattern.row_offsets[row + 1];
    const Acc weighted_sum = detail::dot(grad + begin, out + begin, end - begin);
#pragma omp simd
    for (index_t e = begin; e < end; ++e) {
      grad_values[e] = detail::store<T>(detail::load(out[e]) * (detail::load(grad[e]) - weighted_sum));
    }
  });
}

#define SPATTN_INSTANTIATE(T)                                              \
  template void sparse_softmax<T>(CsrView, const T*, T*, index_t);         \
  template void sparse_softmax_backward<T>(CsrView, const T*, const T*, T*, index_t);
SPATTN_INSTANTIATE(float)
SPATTN_INSTANTIATE(double)
SPATTN_INSTANTIATE(bfloat16)
#undef SPATTN_INSTANTIATE

}  // namespace spattn::cpu

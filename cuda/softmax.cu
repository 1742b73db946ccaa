// Row-wise softmax over each row's entries, and its backward. One warp per (problem, row), lanes stride
// over the row's entries.

#include "device_types.cuh"
#include "spattn/cuda_kernels.hpp"

namespace spattn::cuda {
namespace detail {
namespace {

template <typename D>
__global__ void __launch_bounds__(kThreadsPerBlock)
    softmax_kernel(index_t rows, const index_t* __restrict__ row_offsets, const D* __restrict__ values,
                   D* __restrict__ out, index_t batch) {
  const index_t nnz = row_offsets[rows];
  const int lane = threadIdx.x % 32;
  const index_t items = batch * rows;
  for (index_t item = first_item<32>(); item < items; item += item_stride<32>()) {
    const index_t problem = item / rows, row = item % rows;
    const index_t begin = row_offsets[row], end = row_offsets[row + 1];
    const D* row_values = values + problem * nnz;
    D* row_out = out + problem * nnz;
    float maximum = kNegativeInfinity;
    bool nan_seen = false;
    for (index_t e = begin + lane; e < end; e += 32) {
      const float value = to_float(row_values[e]);
      maximum = fmaxf(maximum, value);
      nan_seen |= isnan(value);
    }
    maximum = group_max<32>(maximum, kFullWarp);
    // Every entry -inf (masked): zeros, not exp(-inf - -inf) = NaN. fmaxf skips NaN, so a row of NaN (and
    // -inf) values also has maximum -inf: it goes on, and its NaN reaches the output.
    if (maximum == kNegativeInfinity && !__any_sync(kFullWarp, nan_seen)) {
      for (index_t e = begin + lane; e < end; e += 32) row_out[e] = from_float<D>(0.f);
      continue;
    }
    float sum = 0.f;
    for (index_t e = begin + lane; e < end; e += 32) sum += expf(to_float(row_values[e]) - maximum);
    const float inverse = 1.f / group_sum<32>(sum, kFullWarp);
    for (index_t e = begin + lane; e < end; e += 32) {
      row_out[e] = from_float<D>(expf(to_float(row_values[e]) - maximum) * inverse);
    }
  }
}

template <typename D>
__global__ void __launch_bounds__(kThreadsPerBlock)
    softmax_backward_kernel(index_t rows, const index_t* __restrict__ row_offsets, const D* __restrict__ grad,
                            const D* __restrict__ out, D* __restrict__ grad_values, index_t batch) {
  const index_t nnz = row_offsets[rows];
  const int lane = threadIdx.x % 32;
  const index_t items = batch * rows;
  for (index_t item = first_item<32>(); item < items; item += item_stride<32>()) {
    const index_t problem = item / rows, row = item % rows;
    const index_t begin = row_offsets[row], end = row_offsets[row + 1];
    const index_t base = problem * nnz;
    float dot = 0.f;
    for (index_t e = begin + lane; e < end; e += 32) dot += to_float(grad[base + e]) * to_float(out[base + e]);
    dot = group_sum<32>(dot, kFullWarp);
    for (index_t e = begin + lane; e < end; e += 32) {
      grad_values[base + e] = from_float<D>(to_float(out[base + e]) * (to_float(grad[base + e]) - dot));
    }
  }
}

}  // namespace
}  // namespace detail

template <typename T>
void sparse_softmax(CsrView pattern, const T* values, T* out, index_t batch, cudaStream_t stream) {
  using namespace detail;
  const index_t items = batch * pattern.rows;
  if (items == 0) return;
  softmax_kernel<<<blocks_for(items, kThreadsPerBlock / 32), kThreadsPerBlock, 0, stream>>>(
      pattern.rows, pattern.row_offsets, to_device(values), to_device(out), batch);
  SPATTN_CUDA_CHECK_LAUNCH();
}

template <typename T>
void sparse_softmax_backward(CsrView pattern, const T* grad, const T* out, T* grad_values, index_t batch,
                             cudaStream_t stream) {
  using namespace detail;
  const index_t items = batch * pattern.rows;
  if (items == 0) return;
  softmax_backward_kernel<<<blocks_for(items, kThreadsPerBlock / 32), kThreadsPerBlock, 0, stream>>>(
      pattern.rows, pattern.row_offsets, to_device(grad), to_device(out), to_device(grad_values), batch);
  SPATTN_CUDA_CHECK_LAUNCH();
}

#define SPATTN_INSTANTIATE(T)                                                                      \
  template void sparse_softmax<T>(CsrView, const T*, T*, index_t, cudaStream_t);                  \
  template void sparse_softmax_backward<T>(CsrView, const T*, const T*, T*, index_t, cudaStream_t);
SPATTN_INSTANTIATE(float)
SPATTN_INSTANTIATE(float16)
SPATTN_INSTANTIATE(bfloat16)
#undef SPATTN_INSTANTIATE

}  // namespace spattn::cuda

#pragma once
// The SIMT passes of the fused attention backward (attention_backward.cu says what each computes and how the
// launcher orders them): the row pass, the column pass, the sum of the bias gradient's partial sums, and,
// under grouped-query attention after the tensor-core kernel, the sum of its per-query-head dK and dV
// partials. A header of their own so that the emulated tests (cpp/tests) run them on the CPU too.

#include "attention_arguments.cuh"
#include "attention_workspace.hpp"

namespace spattn::cuda::detail {

__device__ __forceinline__ float probability(float score, float lse) {
  // lse = -inf: the row had no finite score, so every probability is 0 (not exp(-inf + inf) = NaN).
  return lse == kNegativeInfinity ? 0.f : expf(score - lse);
}

// Work item (group, row). Without a bias gradient, group = problem. With one, group = (chunk, bias head):
// the item handles the chunk's problems of that head (problem = head + j * bias_heads for the chunk's j, in
// increasing order) and leaves the sum of their score gradients for the row's entries in its slice of
// bias_partial (zeros when the chunk has no problem).
template <typename Shape, typename D>
__global__ void __launch_bounds__(kThreadsPerBlock) attention_backward_rows_kernel(const BackwardArguments<D> args) {
  constexpr int kLanes = Shape::kLanes, kElems = Shape::kElems, kStep = entries_per_step<Shape>();
  const int lane = threadIdx.x % kLanes;
  const unsigned mask = group_mask<kLanes>();
  const index_t nnz = args.row_offsets[args.rows];
  const bool sum_bias = args.grad_bias != nullptr;
  const index_t heads = sum_bias ? args.bias_heads : args.batch;
  const index_t problems_per_item = sum_bias ? kProblemsPerBiasChunk : 1;
  const index_t items = (sum_bias ? args.bias_chunks : 1) * heads * args.rows;

  for (index_t item = first_item<kLanes>(); item < items; item += item_stride<kLanes>()) {
    const index_t group = item / args.rows, row = item % args.rows;
    const index_t head = group % heads, chunk = group / heads;
    const index_t begin = args.row_offsets[row], end = args.row_offsets[row + 1];
    float* partial_row = sum_bias ? args.bias_partial + group * nnz : nullptr;
    const index_t first_problem = head + chunk * problems_per_item * heads;
    if (sum_bias && first_problem >= args.batch) {
      // A chunk without problems (or a bias head no problem reads): it contributes zeros.
      for (index_t entry = begin + lane; entry < end; entry += kLanes) partial_row[entry] = 0.f;
      continue;
    }

    for (index_t j = 0; j < problems_per_item; ++j) {
      const index_t problem = first_problem + j * heads;
      if (problem >= args.batch) break;
      const index_t problem_row = problem * args.rows + row;
      const D* k_problem = args.k + args.k_layout.problem_offset(problem, args.heads);
      const D* v_problem = args.v + args.v_layout.problem_offset(problem, args.heads);
      const D* bias_row = args.bias == nullptr ? nullptr : args.bias + (problem % args.bias_heads) * nnz;

      float q[kElems], grad_out[kElems], out[kElems];
      load_fragment<Shape>(args.q + args.q_layout.problem_offset(problem, args.heads) + row * args.q_layout.row_stride,
                           args.head_dim, lane, q);
      load_fragment<Shape>(args.grad_out + args.grad_out_layout.problem_offset(problem, args.heads) +
                               row * args.grad_out_layout.row_stride,
                           args.value_dim, lane, grad_out);
      load_fragment<Shape>(
          args.out + args.out_layout.problem_offset(problem, args.heads) + row * args.out_layout.row_stride,
          args.value_dim, lane, out);
      const float delta = group_sum<kLanes>(partial_dot(grad_out, out), mask) -
                          (args.grad_lse == nullptr ? 0.f : args.grad_lse[problem_row]);
      if (lane == 0) args.delta[problem_row] = delta;
      const float row_lse = args.lse[problem_row];

      float grad_q[kElems];
      zero_fragment(grad_q);
      for (index_t step = begin; step < end; step += kStep) {
        float key[kStep][kElems], value[kStep][kElems];
        load_step_keys_and_values<Shape, kStep>(args.col_indices, step, end, k_problem, args.k_layout.row_stride,
                                                args.head_dim, v_problem, args.v_layout.row_stride, args.value_dim,
                                                lane, key, value);
#pragma unroll
        for (int u = 0; u < kStep; ++u) {
          const index_t entry = step + u;
          const float dot = group_sum<kLanes>(partial_dot(q, key[u]), mask);
          const float grad_probability = group_sum<kLanes>(partial_dot(grad_out, value[u]), mask);
          if (entry < end) {
            const float score = dot * args.scale + (bias_row == nullptr ? 0.f : to_float(bias_row[entry]));
            const float grad_score = probability(score, row_lse) * (grad_probability - delta);
#pragma unroll
            for (int i = 0; i < kElems; ++i) grad_q[i] = fmaf(grad_score, key[u][i], grad_q[i]);
            if (sum_bias && lane == 0) {
              // Only this lane touches these entries of this slice, in problem order.
              partial_row[entry] = j == 0 ? grad_score : partial_row[entry] + grad_score;
            }
          }
        }
      }
      store_fragment<Shape>(args.grad_q + problem_row * args.head_dim, args.head_dim, lane, grad_q, args.scale);
    }
  }
}

// grad_bias[h, e] = sum over chunks c (in order) of bias_partial[c, h, e].
constexpr int kBiasSumBlocks = 1024;
template <typename D>
__global__ void __launch_bounds__(kThreadsPerBlock)
    attention_backward_bias_kernel(index_t rows, const index_t* __restrict__ row_offsets,
                                   const float* __restrict__ bias_partial, D* __restrict__ grad_bias,
                                   index_t bias_heads, index_t chunks) {
  const index_t heads_nnz = bias_heads * row_offsets[rows];
  for (index_t index = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; index < heads_nnz;
       index += static_cast<index_t>(gridDim.x) * blockDim.x) {
    float total = 0.f;
    for (index_t chunk = 0; chunk < chunks; ++chunk) total += bias_partial[chunk * heads_nnz + index];
    grad_bias[index] = from_float<D>(total);
  }
}

// Work item (k/v problem, column): walks the column's entries through the transposed pattern, once for each
// of the k/v problem's head_group query problems, in order. Over every column (listed false) or over the list
// args.unowned_columns only (listed true: the columns the tensor-core backward leaves).
template <typename Shape, typename D>
__global__ void __launch_bounds__(kThreadsPerBlock)
    attention_backward_columns_kernel(const BackwardArguments<D> args, const bool listed) {
  constexpr int kLanes = Shape::kLanes, kElems = Shape::kElems, kStep = entries_per_step<Shape>();
  const int lane = threadIdx.x % kLanes;
  const unsigned mask = group_mask<kLanes>();
  const index_t nnz = args.row_offsets[args.rows];
  const index_t columns = listed ? args.unowned_column_count : args.cols;
  const index_t head_group = args.k_layout.head_group;
  const index_t items = args.batch / head_group * columns;

  for (index_t item = first_item<kLanes>(); item < items; item += item_stride<kLanes>()) {
    const index_t kv_problem = item / columns;
    const index_t column = listed ? args.unowned_columns[item % columns] : item % columns;
    const index_t begin = args.transposed_row_offsets[column], end = args.transposed_row_offsets[column + 1];
    const index_t kv_problem_column = kv_problem * args.cols + column;  // in the contiguous grad_k, grad_v

    // The k/v problem's first query problem: problem_offset maps it (and each of the group) to the k/v head.
    const index_t first_problem = kv_problem * head_group;
    float key[kElems], value[kElems];
    load_fragment<Shape>(
        args.k + args.k_layout.problem_offset(first_problem, args.heads) + column * args.k_layout.row_stride,
        args.head_dim, lane, key);
    load_fragment<Shape>(
        args.v + args.v_layout.problem_offset(first_problem, args.heads) + column * args.v_layout.row_stride,
        args.value_dim, lane, value);
    float grad_k[kElems], grad_v[kElems];
    zero_fragment(grad_k);
    zero_fragment(grad_v);

    for (index_t problem = first_problem; problem < first_problem + head_group; ++problem) {
      const D* q_problem = args.q + args.q_layout.problem_offset(problem, args.heads);
      const D* grad_out_problem = args.grad_out + args.grad_out_layout.problem_offset(problem, args.heads);
      const index_t q_stride = args.q_layout.row_stride, grad_out_stride = args.grad_out_layout.row_stride;
      const float* lse_problem = args.lse + problem * args.rows;
      const float* delta_problem = args.delta + problem * args.rows;
      const D* bias_row = args.bias == nullptr ? nullptr : args.bias + (problem % args.bias_heads) * nnz;

      for (index_t step = begin; step < end; step += kStep) {
        float query[kStep][kElems], grad_out[kStep][kElems];
        index_t rows[kStep];
#pragma unroll
        for (int u = 0; u < kStep; ++u) {
          const index_t entry = step + u;
          rows[u] = entry < end ? args.transposed_col_indices[entry] : 0;
          if (entry < end) {
            load_fragment<Shape>(q_problem + rows[u] * q_stride, args.head_dim, lane, query[u]);
            load_fragment<Shape>(grad_out_problem + rows[u] * grad_out_stride, args.value_dim, lane, grad_out[u]);
          } else {
            zero_fragment(query[u]);
            zero_fragment(grad_out[u]);
          }
        }
#pragma unroll
        for (int u = 0; u < kStep; ++u) {
          const index_t entry = step + u;
          const float dot = group_sum<kLanes>(partial_dot(query[u], key), mask);
          const float grad_probability = group_sum<kLanes>(partial_dot(grad_out[u], value), mask);
          if (entry < end) {
            const index_t csr_entry = args.permutation[entry];
            const float score = dot * args.scale + (bias_row == nullptr ? 0.f : to_float(bias_row[csr_entry]));
            const float p = probability(score, lse_problem[rows[u]]);
            const float grad_score = p * (grad_probability - delta_problem[rows[u]]);
#pragma unroll
            for (int i = 0; i < kElems; ++i) {
              grad_v[i] = fmaf(p, grad_out[u][i], grad_v[i]);
              grad_k[i] = fmaf(grad_score, query[u][i], grad_k[i]);
            }
          }
        }
      }
    }
    store_fragment<Shape>(args.grad_k + kv_problem_column * args.head_dim, args.head_dim, lane, grad_k, args.scale);
    store_fragment<Shape>(args.grad_v + kv_problem_column * args.value_dim, args.value_dim, lane, grad_v, 1.f);
  }
}

// The lower bound of `value` in the sorted array [first, first + count).
__device__ __forceinline__ const index_t* sorted_lower_bound(const index_t* first, index_t count, index_t value) {
  while (count > 0) {
    const index_t half = count / 2;
    if (first[half] < value) {
      first += half + 1;
      count -= half + 1;
    } else {
      count = half;
    }
  }
  return first;
}

// grad_k and grad_v of the owned columns (those not in the sorted list args.unowned_columns: the column pass
// writes those, and their partials were never written) are the sums of the g = head_group query problems'
// partials, added in order. One element (k/v problem, column, d) per thread and step of a striding grid,
// dK's elements then dV's.
template <typename D>
__global__ void __launch_bounds__(kThreadsPerBlock)
    attention_backward_sum_partials_kernel(const BackwardArguments<D> args) {
  const index_t head_group = args.k_layout.head_group, kv_columns = args.batch / head_group * args.cols;
  const index_t key_elements = kv_columns * args.head_dim, elements = key_elements + kv_columns * args.value_dim;
  for (index_t index = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; index < elements;
       index += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const bool key = index < key_elements;
    const index_t dim = key ? args.head_dim : args.value_dim;
    const index_t element = key ? index : index - key_elements;
    const index_t kv_column = element / dim, d = element % dim;
    const index_t kv_problem = kv_column / args.cols, column = kv_column % args.cols;
    const index_t* unowned = sorted_lower_bound(args.unowned_columns, args.unowned_column_count, column);
    if (unowned != args.unowned_columns + args.unowned_column_count && *unowned == column) continue;
    const float* partial = key ? args.key_partial : args.value_partial;
    float total = 0.f;
    for (index_t i = 0; i < head_group; ++i) {
      total += partial[((kv_problem * head_group + i) * args.cols + column) * dim + d];
    }
    (key ? args.grad_k : args.grad_v)[element] = from_float<D>(total);
  }
}

}  // namespace spattn::cuda::detail

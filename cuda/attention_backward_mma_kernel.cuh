#pragma once
// The kernel of the fused attention backward over the execution plan's groups on tensor cores (float16 and bfloat16).
//
// One block of kMmaWarps warps per work item, walking a group's rows a chunk at a time and its columns a
// tile at a time (mma_tiles.cuh). With q, dO, k and v of the tile in shared memory, warp w recomputes for
// its 16 rows S = Q K^T on tensor cores, two lanes per row form P = exp(scale * S + bias - lse) (kept in
// registers, stored in the storage type), then dP = dO V^T goes to the same float tile and the lanes form
//   dS = P * (dP - delta),  delta = rowsum(dO * O)
// (stored in the storage type); the warp adds dS K to its rows' float dQ accumulators. A group of at most
// one chunk of rows then, after a block barrier, reduces dV = P^T dO and dK = scale * dS^T Q for the tile's
// columns, one 16-column block per warp, and writes those of the columns it owns (column_owned_by_group):
// their sums are complete. The column pass of attention_backward.cu does the rest.
//
// The bias gradient is deterministic like the row-by-row kernel's: an item is (chunk of problems, bias
// head, group), walks its problems in order, and leaves the sum of their dS in its slice of bias_partial
// (each entry touched by the same thread for every problem); attention_backward.cu adds the slices.

#include "attention_workspace.hpp"
#include "mma_tiles.cuh"

namespace spattn::cuda::detail {

// Byte offsets of the tiles in the dynamic shared memory. One float tile holds S, then dP; the float staging
// tile of dK and dV is only used between the element-wise steps and the next tile, when no warp reads that
// tile any more: it reuses it (sized for the larger of the two).
struct BackwardTiles {
  int head_pad, value_pad;
  int key_stride, value_stride, score_stride, weight_stride, grad_query_stride, staging_stride;
  int queries, grad_outputs, keys, values, scores, probabilities, grad_scores, grad_queries;
  int staging, bytes;
};

__host__ __device__ inline BackwardTiles backward_tiles(int head_dim, int value_dim, int storage_bytes) {
  BackwardTiles t{};
  t.head_pad = padded_to_blocks(head_dim);
  t.value_pad = padded_to_blocks(value_dim);
  t.key_stride = half_stride(t.head_pad);  // queries and keys
  t.value_stride = half_stride(t.value_pad);  // grad_outputs and values
  t.score_stride = float_stride(kTileColumns);
  t.weight_stride = half_stride(kTileColumns);  // probabilities and grad_scores
  t.grad_query_stride = float_stride(t.head_pad);
  t.staging_stride = float_stride(t.head_pad > t.value_pad ? t.head_pad : t.value_pad);
  SharedCarver carver;
  t.queries = carver.take(kChunkRows * t.key_stride * storage_bytes);
  t.grad_outputs = carver.take(kChunkRows * t.value_stride * storage_bytes);
  t.keys = carver.take(kTileColumns * t.key_stride * storage_bytes);
  t.values = carver.take(kTileColumns * t.value_stride * storage_bytes);
  const int score_floats = kChunkRows * t.score_stride, staging_floats = kTileColumns * t.staging_stride;
  t.scores = carver.take((score_floats > staging_floats ? score_floats : staging_floats) * 4);
  t.probabilities = carver.take(kChunkRows * t.weight_stride * storage_bytes);
  t.grad_scores = carver.take(kChunkRows * t.weight_stride * storage_bytes);
  t.grad_queries = carver.take(kChunkRows * t.grad_query_stride * 4);
  t.staging = t.scores;
  t.bytes = carver.bytes;
  return t;
}

// Whether the group owns column `column` of the tile (see column_owned_by_group).
__device__ __forceinline__ bool tile_column_owned(const index_t* __restrict__ tile_columns_list, int column,
                                                  const index_t* __restrict__ transposed_row_offsets,
                                                  index_t group_size) {
  const index_t col = tile_columns_list[column];
  return column_owned_by_group(transposed_row_offsets[col + 1] - transposed_row_offsets[col], group_size);
}

// Writes rows [0, 16) of a warp's float tile to the key or value rows of the tile's columns that the group
// owns, times `factor`. Lanes run along a row (coalesced).
template <typename D>
__device__ __forceinline__ void write_owned_columns(const float* __restrict__ tile, int stride, int first_column,
                                                    int tile_columns, const index_t* __restrict__ columns,
                                                    const index_t* __restrict__ transposed_row_offsets,
                                                    index_t group_size, D* __restrict__ destination, index_t dim,
                                                    float factor, int lane) {
  for (int r = 0; r < kBlockSize; ++r) {
    const int column = first_column + r;
    if (column >= tile_columns) break;
    if (!tile_column_owned(columns, column, transposed_row_offsets, group_size)) continue;
    D* row = destination + columns[column] * dim;
    for (int d = lane; d < dim; d += 32) row[d] = from_float<D>(tile[r * stride + d] * factor);
  }
}

template <typename D>
__global__ void __launch_bounds__(kMmaThreads, kBackwardBlocksPerSm)
    attention_backward_mma_kernel(const BackwardArguments<D> args, const VectorLoads loads) {
#if SPATTN_MMA_DEVICE_CODE
  SPATTN_DYNAMIC_SHARED(float4, shared_vectors);  // float4: 16-byte aligned
  char* shared = reinterpret_cast<char*>(shared_vectors);
  const BackwardTiles t = backward_tiles(static_cast<int>(args.head_dim), static_cast<int>(args.value_dim), sizeof(D));
  D* queries = reinterpret_cast<D*>(shared + t.queries);
  D* grad_outputs = reinterpret_cast<D*>(shared + t.grad_outputs);
  D* keys = reinterpret_cast<D*>(shared + t.keys);
  D* values = reinterpret_cast<D*>(shared + t.values);
  D* probabilities = reinterpret_cast<D*>(shared + t.probabilities);
  D* grad_scores = reinterpret_cast<D*>(shared + t.grad_scores);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  // This warp's 16 rows of each per-row tile; its 16 columns of the staging tile.
  const D* warp_queries = queries + warp * kBlockSize * t.key_stride;
  const D* warp_grad_outputs = grad_outputs + warp * kBlockSize * t.value_stride;
  float* warp_scores = reinterpret_cast<float*>(shared + t.scores) + warp * kBlockSize * t.score_stride;
  D* warp_probabilities = probabilities + warp * kBlockSize * t.weight_stride;
  D* warp_grad_scores = grad_scores + warp * kBlockSize * t.weight_stride;
  float* warp_grad_queries =
      reinterpret_cast<float*>(shared + t.grad_queries) + warp * kBlockSize * t.grad_query_stride;
  float* warp_staging = reinterpret_cast<float*>(shared + t.staging) + warp * kBlockSize * t.staging_stride;
  // In the element-wise step lanes 2 r and 2 r + 1 serve row r of the warp's 16, each half of the columns.
  const int lane_row = lane / 2, lane_half = lane % 2;
  // Lane half h takes columns h, h + 2, h + 4, ...: the two lanes of a row touch neighbouring elements
  // (fewer shared memory bank conflicts, coalesced bias reads and partial sums).
  const float* my_scores = warp_scores + lane_row * t.score_stride + lane_half;
  D* my_probabilities = warp_probabilities + lane_row * t.weight_stride + lane_half;
  D* my_grad_scores = warp_grad_scores + lane_row * t.weight_stride + lane_half;

  const index_t nnz = args.row_offsets[args.rows];
  const bool sum_bias = args.grad_bias != nullptr;
  const index_t heads = sum_bias ? args.bias_heads : args.batch;
  const index_t problems_per_item = sum_bias ? kProblemsPerBiasChunk : 1;
  const index_t items = (sum_bias ? args.bias_chunks : 1) * heads * args.groups;

  // Everything that decides a barrier below (item, problem, chunk and tile counts) is block-uniform.
  for (index_t item = blockIdx.x; item < items; item += gridDim.x) {
    const index_t slot = item / args.groups, group = item % args.groups;  // slot = chunk * heads + head
    const index_t head = slot % heads, problem_chunk = slot / heads;
    const auto [group_size, group_rows, columns, column_count] =
        plan_group(args.row_offsets, args.col_indices, args.group_offsets, args.group_rows, group);
    const bool reduces_columns = group_size <= kChunkRows;  // then it may own columns
    float* partial = sum_bias ? args.bias_partial + slot * nnz : nullptr;
    const index_t first_problem = head + problem_chunk * problems_per_item * heads;
    if (sum_bias && first_problem >= args.batch) {
      // A chunk without problems (or a bias head no problem reads): its slice holds zeros.
      for (index_t e = threadIdx.x; e < group_size * column_count; e += blockDim.x) {
        partial[args.row_offsets[group_rows[e / column_count]] + e % column_count] = 0.f;
      }
      continue;
    }

    for (index_t j = 0; j < problems_per_item; ++j) {
      const index_t problem = first_problem + j * heads;
      if (problem >= args.batch) break;
      const D* q_problem = args.q + problem * args.rows * args.head_dim;
      const D* grad_out_problem = args.grad_out + problem * args.rows * args.value_dim;
      const D* k_problem = args.k + problem * args.cols * args.head_dim;
      const D* v_problem = args.v + problem * args.cols * args.value_dim;
      D* grad_k_problem = args.grad_k + problem * args.cols * args.head_dim;
      D* grad_v_problem = args.grad_v + problem * args.cols * args.value_dim;
      const D* bias_problem = args.bias == nullptr ? nullptr : args.bias + (problem % args.bias_heads) * nnz;

      for (index_t chunk = 0; chunk < group_size; chunk += kChunkRows) {
        const int chunk_rows = static_cast<int>(group_size - chunk < kChunkRows ? group_size - chunk : kChunkRows);
        const int row_blocks = (chunk_rows + kBlockSize - 1) / kBlockSize;
        const bool warp_active = warp < row_blocks;
        const int my_row = warp * kBlockSize + lane_row;  // in the chunk
        const bool row_valid = my_row < chunk_rows;
        const index_t row = row_valid ? group_rows[chunk + my_row] : 0;
        const index_t problem_row = problem * args.rows + row;
        const D* bias_row = bias_problem != nullptr && row_valid ? bias_problem + args.row_offsets[row] : nullptr;
        float* partial_row = partial != nullptr && row_valid ? partial + args.row_offsets[row] : nullptr;

        // The row terms: delta = rowsum(dO * O) (also for the column pass) and the forward's lse.
        float delta = 0.f, row_lse = kNegativeInfinity;
        if (row_valid) {
          const D* out_row = args.out + problem_row * args.value_dim;
          const D* grad_out_row = args.grad_out + problem_row * args.value_dim;
          for (int d = lane_half; d < args.value_dim; d += 2) delta += to_float(out_row[d]) * to_float(grad_out_row[d]);
          row_lse = args.lse[problem_row];
        }
        delta += __shfl_xor_sync(kFullWarp, delta, 1);
        if (row_valid && lane_half == 0) args.delta[problem_row] = delta;

        __syncthreads();  // the previous chunk is done with every tile
        gather_rows(queries, t.key_stride, kChunkRows, t.head_pad, q_problem, args.head_dim, group_rows + chunk,
                    chunk_rows, loads.q);
        gather_rows(grad_outputs, t.value_stride, kChunkRows, t.value_pad, grad_out_problem, args.value_dim,
                    group_rows + chunk, chunk_rows, loads.grad_out);
        for (int e = lane; e < kBlockSize * t.head_pad; e += 32) {
          warp_grad_queries[(e / t.head_pad) * t.grad_query_stride + e % t.head_pad] = 0.f;
        }

        for (index_t tile_begin = 0; tile_begin < column_count; tile_begin += kTileColumns) {
          const int tile_columns =
              static_cast<int>(column_count - tile_begin < kTileColumns ? column_count - tile_begin : kTileColumns);
          const int column_blocks = (tile_columns + kBlockSize - 1) / kBlockSize;
          __syncthreads();  // every warp is done with the previous tile (and the rows are in place)
          gather_rows(keys, t.key_stride, kTileColumns, t.head_pad, k_problem, args.head_dim, columns + tile_begin,
                      tile_columns, loads.k);
          gather_rows(values, t.value_stride, kTileColumns, t.value_pad, v_problem, args.value_dim,
                      columns + tile_begin, tile_columns, loads.v);
          __syncthreads();

          if (warp_active) {
            // S = Q K^T (keys are stored [column][d]: B is column-major).
            warp_product<false, true>(warp_queries, t.key_stride, t.head_pad / kBlockSize, keys, t.key_stride,
                                      column_blocks, warp_scores, t.score_stride, false);
            __syncwarp();
            // P; zeros past the tile's columns and the chunk's rows (the products below read them).
            float probability[kColumnsPerLane];
#pragma unroll
            for (int c = 0; c < kColumnsPerLane; ++c) {
              const int column = 2 * c + lane_half;
              probability[c] = 0.f;
              if (row_valid && column < tile_columns) {
                const float bias = bias_row == nullptr ? 0.f : to_float(bias_row[tile_begin + column]);
                const float score = my_scores[2 * c] * args.scale + bias;
                // lse = -inf: the row had no finite score, every probability is 0 (not exp(-inf + inf)).
                probability[c] = row_lse == kNegativeInfinity ? 0.f : expf(score - row_lse);
              }
              my_probabilities[2 * c] = from_float<D>(probability[c]);
            }
            __syncwarp();  // every lane is done reading S: dP replaces it
            // dP = dO V^T (values are stored [column][d]: B is column-major).
            warp_product<false, true>(warp_grad_outputs, t.value_stride, t.value_pad / kBlockSize, values,
                                      t.value_stride, column_blocks, warp_scores, t.score_stride, false);
            __syncwarp();
            // dS, and its sum over problems for the bias gradient.
#pragma unroll
            for (int c = 0; c < kColumnsPerLane; ++c) {
              const int column = 2 * c + lane_half;
              float grad_score = 0.f;
              if (row_valid && column < tile_columns) {
                grad_score = probability[c] * (my_scores[2 * c] - delta);  // the tile now holds dP
                if (partial_row != nullptr) {
                  const index_t entry = tile_begin + column;  // in the row
                  partial_row[entry] = j == 0 ? grad_score : partial_row[entry] + grad_score;
                }
              }
              my_grad_scores[2 * c] = from_float<D>(grad_score);
            }
            __syncwarp();
            // dQ += dS K (keys [column][d]: row-major B).
            warp_product<false, false>(warp_grad_scores, t.weight_stride, column_blocks, keys, t.key_stride,
                                       t.head_pad / kBlockSize, warp_grad_queries, t.grad_query_stride, true);
          }

          // Groups of one chunk whose tile has an owned column (every tile of a Swin window; few of a random
          // pattern's): the block barrier also tells whether any thread found one.
          static_assert(kMmaThreads >= kTileColumns, "one thread per column of a tile");
          const bool owns_a_column =
              reduces_columns && static_cast<int>(threadIdx.x) < tile_columns &&
              tile_column_owned(columns + tile_begin, threadIdx.x, args.transposed_row_offsets, group_size);
          if (reduces_columns && __syncthreads_or(owns_a_column)) {
            // P and dS of every row are in place; nobody reads the scores any more.
            const int first_column = warp * kBlockSize;
            if (first_column < tile_columns) {
              // dV = P^T dO and dK = scale * dS^T Q for columns [first_column, first_column + 16).
              warp_product<true, false>(probabilities + first_column, t.weight_stride, row_blocks, grad_outputs,
                                        t.value_stride, t.value_pad / kBlockSize, warp_staging, t.staging_stride,
                                        false);
              __syncwarp();
              write_owned_columns(warp_staging, t.staging_stride, first_column, tile_columns, columns + tile_begin,
                                  args.transposed_row_offsets, group_size, grad_v_problem, args.value_dim, 1.f,
                                  lane);
              __syncwarp();  // every lane is done reading dV before dK replaces it
              warp_product<true, false>(grad_scores + first_column, t.weight_stride, row_blocks, queries,
                                        t.key_stride, t.head_pad / kBlockSize, warp_staging, t.staging_stride, false);
              __syncwarp();
              write_owned_columns(warp_staging, t.staging_stride, first_column, tile_columns, columns + tile_begin,
                                  args.transposed_row_offsets, group_size, grad_k_problem, args.head_dim,
                                  args.scale, lane);
            }
          }
        }

        // dQ = scale * (dS K) of the warp's rows, written a row at a time (lanes along the row).
        __syncwarp();
        for (int r = 0; r < kBlockSize; ++r) {
          const int source_lane = 2 * r;
          const bool valid = __shfl_sync(kFullWarp, static_cast<int>(row_valid), source_lane) != 0;
          const index_t q_row = __shfl_sync(kFullWarp, static_cast<long long>(problem_row), source_lane);
          if (!valid) continue;
          D* destination = args.grad_q + q_row * args.head_dim;
          const float* source = warp_grad_queries + r * t.grad_query_stride;
          for (int d = lane; d < args.head_dim; d += 32) destination[d] = from_float<D>(source[d] * args.scale);
        }
      }
    }
  }
#elif defined(__CUDA_ARCH__)
  __trap();  // compiled for a device below sm_80: the launcher never starts it there (mma_kernel_ready)
#endif
}

}  // namespace spattn::cuda::detail

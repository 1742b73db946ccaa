#pragma once
// The kernel of the fused attention forward over the execution plan's groups on tensor cores (float16 and bfloat16).
//
// One block of kMmaWarps warps per (problem, group): the group's rows are taken kChunkRows at a time and its
// columns kTileColumns at a time, gathered into shared memory (mma_tiles.cuh). Per tile, warp w computes the
// scores of its 16 rows, S = Q K^T, on tensor cores into a float tile; two lanes per row then apply scale and
// bias and run the online softmax (the tile's weights P = exp(S - running max), stored in the storage type
// over the scores, which the lanes hold in registers by then: one tile less keeps more blocks per SM);
// the warp adds P V to its rows' float output accumulators, after rescaling them by the change of the
// running maximum. Only the warp's own rows are touched between block barriers.
//
// Semantics match the other forward kernels: rows without finite scores give zeros and lse -inf, a NaN score
// poisons its row (output and lse NaN). Rounding differs by storing P in the storage type before P V, as
// flash attention does; lse comes from the float weights.

#include "mma_tiles.cuh"

namespace spattn::cuda::detail {

// Byte offsets of the tiles in the dynamic shared memory.
struct ForwardTiles {
  int head_pad, value_pad;                       // head_dim, value_dim padded to blocks
  int key_stride, value_stride, score_stride, weight_stride, output_stride;
  int queries, keys, values, scores, outputs, bytes;  // the weights overwrite the scores
};

static_assert(half_stride(kTileColumns) * 2 <= float_stride(kTileColumns) * 4,
              "a row of weights (at most 2-byte elements) fits in a row of scores");

__host__ __device__ inline ForwardTiles forward_tiles(int head_dim, int value_dim, int storage_bytes) {
  ForwardTiles t{};
  t.head_pad = padded_to_blocks(head_dim);
  t.value_pad = padded_to_blocks(value_dim);
  t.key_stride = half_stride(t.head_pad);      // queries and keys
  t.value_stride = half_stride(t.value_pad);
  t.score_stride = float_stride(kTileColumns);
  t.weight_stride = half_stride(kTileColumns);
  t.output_stride = float_stride(t.value_pad);
  SharedCarver carver;
  t.queries = carver.take(kChunkRows * t.key_stride * storage_bytes);
  t.keys = carver.take(kTileColumns * t.key_stride * storage_bytes);
  t.values = carver.take(kTileColumns * t.value_stride * storage_bytes);
  t.scores = carver.take(kChunkRows * t.score_stride * 4);  // also holds kChunkRows x weight_stride weights
  t.outputs = carver.take(kChunkRows * t.output_stride * 4);
  t.bytes = carver.bytes;
  return t;
}

template <typename D>
__global__ void __launch_bounds__(kMmaThreads, kForwardBlocksPerSm)
    attention_forward_mma_kernel(const GroupedArguments<D> args, const VectorLoads loads) {
#if SPATTN_MMA_DEVICE_CODE
  SPATTN_DYNAMIC_SHARED(float4, shared_vectors);  // float4: 16-byte aligned
  char* shared = reinterpret_cast<char*>(shared_vectors);
  const ForwardTiles t = forward_tiles(static_cast<int>(args.head_dim), static_cast<int>(args.value_dim), sizeof(D));
  D* queries = reinterpret_cast<D*>(shared + t.queries);
  D* keys = reinterpret_cast<D*>(shared + t.keys);
  D* values = reinterpret_cast<D*>(shared + t.values);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  // This warp's 16 rows of each per-row tile.
  const D* warp_queries = queries + warp * kBlockSize * t.key_stride;
  float* warp_scores = reinterpret_cast<float*>(shared + t.scores) + warp * kBlockSize * t.score_stride;
  // The warp's weights start where its scores do (16 rows of weights take less room than 16 of scores).
  D* warp_weights = reinterpret_cast<D*>(warp_scores);
  float* warp_outputs = reinterpret_cast<float*>(shared + t.outputs) + warp * kBlockSize * t.output_stride;
  // In the element-wise steps lanes 2 r and 2 r + 1 serve row r of the warp's 16, each half of the columns.
  const int lane_row = lane / 2, lane_half = lane % 2;
  // Lane half h takes columns h, h + 2, h + 4, ...: the two lanes of a row read neighbouring elements
  // (fewer shared memory bank conflicts, coalesced bias reads).
  const float* my_scores = warp_scores + lane_row * t.score_stride + lane_half;
  D* my_weights = warp_weights + lane_row * t.weight_stride + lane_half;
  float* my_outputs = warp_outputs + lane_row * t.output_stride;
  const index_t nnz = args.row_offsets[args.rows];
  const index_t items = args.batch * args.groups;

  // Everything that decides a barrier below (item, chunk, tile counts) is the same for the whole block.
  for (index_t item = blockIdx.x; item < items; item += gridDim.x) {
    const index_t problem = item / args.groups, group = item % args.groups;
    const auto [group_size, group_rows, columns, column_count] =
        plan_group(args.row_offsets, args.col_indices, args.group_offsets, args.group_rows, group);
    const D* q_problem = args.q + problem * args.rows * args.head_dim;
    const D* k_problem = args.k + problem * args.cols * args.head_dim;
    const D* v_problem = args.v + problem * args.cols * args.value_dim;
    const D* bias_problem = args.bias == nullptr ? nullptr : args.bias + (problem % args.bias_heads) * nnz;

    for (index_t chunk = 0; chunk < group_size; chunk += kChunkRows) {
      const int chunk_rows = static_cast<int>(group_size - chunk < kChunkRows ? group_size - chunk : kChunkRows);
      const bool warp_active = warp * kBlockSize < chunk_rows;
      const int my_row = warp * kBlockSize + lane_row;  // in the chunk
      const bool row_valid = my_row < chunk_rows;
      const index_t row = row_valid ? group_rows[chunk + my_row] : 0;
      const D* bias_row = bias_problem != nullptr && row_valid ? bias_problem + args.row_offsets[row] : nullptr;
      float running_max = kNegativeInfinity, running_sum = 0.f;
      bool poisoned = false;  // a NaN score: fmaxf skips it, so it is tracked to reach the output

      __syncthreads();  // the previous chunk is done with the queries and the tiles
      gather_rows(queries, t.key_stride, kChunkRows, t.head_pad, q_problem, args.head_dim, group_rows + chunk,
                  chunk_rows, loads.q);
      for (int e = lane; e < kBlockSize * t.value_pad; e += 32) {
        warp_outputs[(e / t.value_pad) * t.output_stride + e % t.value_pad] = 0.f;
      }

      for (index_t tile_begin = 0; tile_begin < column_count; tile_begin += kTileColumns) {
        const int tile_columns =
            static_cast<int>(column_count - tile_begin < kTileColumns ? column_count - tile_begin : kTileColumns);
        const int column_blocks = (tile_columns + kBlockSize - 1) / kBlockSize;
        __syncthreads();  // every warp is done with the previous tile (and the queries are in place)
        gather_rows(keys, t.key_stride, kTileColumns, t.head_pad, k_problem, args.head_dim,
                    columns + tile_begin, tile_columns, loads.k);
        gather_rows(values, t.value_stride, kTileColumns, t.value_pad, v_problem, args.value_dim,
                    columns + tile_begin, tile_columns, loads.v);
        __syncthreads();
        if (!warp_active) continue;  // a warp-uniform skip: no barrier until the next tile

        // S = Q K^T for the warp's rows (keys are stored [column][d]: B = K^T is column-major).
        warp_product<false, true>(warp_queries, t.key_stride, t.head_pad / kBlockSize, keys, t.key_stride,
                                  column_blocks, warp_scores, t.score_stride, false);
        __syncwarp();

        // Scale and bias, into registers; columns past the tile (and rows past the chunk) become -inf.
        float score[kColumnsPerLane];
        float tile_max = kNegativeInfinity;
        bool nan_seen = false;
#pragma unroll
        for (int j = 0; j < kColumnsPerLane; ++j) {
          const int column = 2 * j + lane_half;
          score[j] = kNegativeInfinity;
          if (row_valid && column < tile_columns) {
            const float bias = bias_row == nullptr ? 0.f : to_float(bias_row[tile_begin + column]);
            score[j] = my_scores[2 * j] * args.scale + bias;
          }
          tile_max = fmaxf(tile_max, score[j]);
          nan_seen |= isnan(score[j]);
        }
        tile_max = fmaxf(tile_max, __shfl_xor_sync(kFullWarp, tile_max, 1));
        poisoned |= (__shfl_xor_sync(kFullWarp, static_cast<int>(nan_seen), 1) != 0) || nan_seen;
        const float new_max = fmaxf(running_max, tile_max);
        // A row with nothing but -inf so far adds no weight (exp(-inf - -inf) would be NaN).
        const bool has_finite = new_max != kNegativeInfinity;
        const float correction = has_finite ? expf(running_max - new_max) : 1.f;  // 0 on the first finite tile
        float tile_sum = 0.f;
        __syncwarp();  // every lane holds its scores: the weights may overwrite them
#pragma unroll
        for (int j = 0; j < kColumnsPerLane; ++j) {
          const float weight = has_finite ? expf(score[j] - new_max) : 0.f;  // 0 where the score is -inf
          my_weights[2 * j] = from_float<D>(weight);
          tile_sum += weight;
        }
        tile_sum += __shfl_xor_sync(kFullWarp, tile_sum, 1);
        running_sum = running_sum * correction + tile_sum;
        if (has_finite) running_max = new_max;
        if (tile_begin > 0) {
          for (int d = lane_half; d < t.value_pad; d += 2) my_outputs[d] *= correction;
        }
        __syncwarp();

        // O += P V (values are stored [column][d]: row-major B).
        warp_product<false, false>(warp_weights, t.weight_stride, column_blocks, values, t.value_stride,
                                   t.value_pad / kBlockSize, warp_outputs, t.output_stride, true);
      }

      // running_sum >= 1 once a score was finite (the maximum contributes exp(0)); NaN for a poisoned row.
      const float sum = poisoned ? __int_as_float(0x7fc00000) : running_sum;
      const bool has_weight = sum != 0.f;
      const float factor = has_weight ? 1.f / sum : 0.f;
      const index_t problem_row = problem * args.rows + row;
      if (row_valid && lane_half == 0) args.lse[problem_row] = has_weight ? running_max + logf(sum) : kNegativeInfinity;
      __syncwarp();  // the last product's outputs are visible to every lane
      // The warp writes its rows one at a time, lanes along the row (coalesced).
      for (int r = 0; r < kBlockSize; ++r) {
        const int source_lane = 2 * r;
        const bool valid = __shfl_sync(kFullWarp, static_cast<int>(row_valid), source_lane) != 0;
        const float row_factor = __shfl_sync(kFullWarp, factor, source_lane);
        const index_t out_row = __shfl_sync(kFullWarp, static_cast<long long>(problem_row), source_lane);
        if (!valid) continue;
        D* destination = args.out + out_row * args.value_dim;
        const float* source = warp_outputs + r * t.output_stride;
        for (int d = lane; d < args.value_dim; d += 32) destination[d] = from_float<D>(source[d] * row_factor);
      }
    }
  }
#elif defined(__CUDA_ARCH__)
  __trap();  // compiled for a device below sm_80: the launcher never starts it there (mma_kernel_ready)
#endif
}

}  // namespace spattn::cuda::detail

#pragma once
// The fused attention forward over the execution plan on tensor cores (float16 and bfloat16), FlashAttention-2
// style: everything between the gathers and the output stays in registers.
//
// A persistent grid; each block walks a contiguous range of work items (step, problem) of the plan's schedule
// (flash_step.cuh), one key tile at a time, with the next unit's q, k, v and bias in flight (cp.async, two
// stages) while it computes the current one. Warp w serves the 16 stage rows [16 w, 16 w + 16) of its task:
//   S = Q K^T          mma.sync m16n8k16, Q and K fragments from ldmatrix; keys at n8 granularity (a 49-key
//                      window costs 56 columns)
//   P = exp2(S scale log2(e) + bias log2(e) - m)   in the accumulator registers, row maxima by shuffles;
//                      the running maximum is rescaled only when the step has more than one key tile
//   O += P V           P re-packed from the accumulators as the A operand (the m16n8 accumulator layout of
//                      two n8 blocks is the m16k16 A layout), V fragments from ldmatrix.trans; an odd last
//                      n8 block of keys takes m16n8k8
// Semantics match the other forward kernels: rows without a finite score give zeros and lse -inf; a NaN score
// poisons its row (output and lse NaN). P is rounded to the storage type before P V, as flash attention does;
// the row sums (and lse) come from the float weights.

#include "flash_fragments.cuh"

namespace spattn::cuda::detail {

// Blocks per SM the kernels are compiled for (a register budget for ptxas: at most 65536 / (128 blocks), the
// largest that compiles without spills on sm_90). The shared memory of two stages, about 49, 74 and 123 KiB
// per block for dims up to 32, 64 and 128 (with a bias), allows as many.
template <int kMaxDim>
constexpr int flash_forward_blocks_per_sm() {
  return kMaxDim <= 32 ? 4 : kMaxDim <= 64 ? 3 : 1;
}

template <typename D, int kMaxDim>
__global__ void __launch_bounds__(kFlashThreads, flash_forward_blocks_per_sm<kMaxDim>())
    attention_forward_flash_kernel(const GroupedArguments<D> args, const FlashOptions options) {
#if SPATTN_FLASH_DEVICE_CODE
  constexpr int kHeadSteps = kMaxDim / 16;   // k16 steps of S = Q K^T
  constexpr int kValueBlocks = kMaxDim / 8;  // n8 blocks of O
  SPATTN_DYNAMIC_SHARED(float4, shared_vectors);
  char* shared = reinterpret_cast<char*>(shared_vectors);
  const bool has_bias = args.bias != nullptr;
  const FlashLayout t =
      flash_layout(static_cast<int>(args.head_dim), static_cast<int>(args.value_dim), has_bias, false);
  StepDescriptor* descriptors = reinterpret_cast<StepDescriptor*>(shared + t.descriptors);
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int group = lane / 4, pair = 2 * (lane % 4);  // accumulator rows group, group + 8; columns pair, pair + 1
  const int head_steps = t.head_pad / 16, value_pairs = t.value_pad / 16;
  const float scale_log2 = args.scale * kLog2e;
  const index_t nnz = args.row_offsets[args.rows];

  // This block's work items: a contiguous range of (step, problem), step-major.
  const auto [first_item, last_item] = block_items(args.step_count * args.batch);
  if (first_item >= last_item) return;  // the whole block

  // Gathers unit (item, tile) into stage `stage` (every thread; no wait).
  const auto issue = [&](index_t item, int tile, const StepDescriptor& d, int stage) {
    gather_attention_operands<D>(shared + stage * t.stage_bytes, t, d, args, item % args.batch, tile, nnz,
                                 options.async);
  };

  // The row state of this lane's two rows (group, group + 8 of the warp's 16), kept over a step's key tiles.
  Accumulator output[kValueBlocks];
  float row_max[2], row_sum[2];
  bool poisoned[2];

  index_t item = first_item;
  int tile = 0, slot = 0, stage = 0;
  decode_step(args.steps, args.row_offsets, args.col_indices, args.group_offsets, args.group_rows,
              item / args.batch, descriptors[0]);
  issue(item, tile, descriptors[0], 0);
  cp_async_commit();

  while (true) {
    const StepDescriptor& d = descriptors[slot];
    // The next unit: the step's next key tile, else the next item (decoding its step when it changes).
    index_t next_item = item;
    int next_tile = tile + 1, next_slot = slot;
    if (next_tile >= d.tiles) {
      next_item = item + 1;
      next_tile = 0;
      if (next_item < last_item && next_item / args.batch != d.step) {
        next_slot = slot ^ 1;  // its previous user finished at the last trailing barrier
        decode_step(args.steps, args.row_offsets, args.col_indices, args.group_offsets, args.group_rows,
                    next_item / args.batch, descriptors[next_slot]);
      }
    }
    const bool has_next = next_item < last_item;
    if (has_next) issue(next_item, next_tile, descriptors[next_slot], stage ^ 1);
    cp_async_commit();
    cp_async_wait<1>();  // this unit's copies (all but the group just committed) have landed
    __syncthreads();

    const int rows = d.warp_rows[warp];
    if (rows > 0) {
      const char* base = shared + stage * t.stage_bytes;
      const D* queries = reinterpret_cast<const D*>(base + t.queries);
      const D* keys = reinterpret_cast<const D*>(base + t.keys) + d.warp_key_offset[warp] * t.key_stride;
      const D* values = reinterpret_cast<const D*>(base + t.values) + d.warp_key_offset[warp] * t.value_stride;
      const int remaining = d.warp_keys[warp] - tile * kFlashKeys;
      const int tile_keys = remaining < kFlashKeys ? remaining : kFlashKeys;
      const int key_blocks = (tile_keys + 7) / 8;
      const bool single_tile = d.tiles == 1;

      if (tile == 0) {
#pragma unroll
        for (int n = 0; n < kValueBlocks; ++n) output[n] = Accumulator{};
        row_max[0] = row_max[1] = kNegativeInfinity;
        row_sum[0] = row_sum[1] = 0.f;
        poisoned[0] = poisoned[1] = false;
      }

      // S = Q K^T.
      Accumulator scores[kKeyBlocks];
      row_products<kHeadSteps>(scores, queries + warp * 16 * t.key_stride, t.key_stride, head_steps, keys,
                               t.key_stride, key_blocks, lane);

      // Scale and bias in the log2 domain; keys past the tile are -inf. Then the rows' maxima.
      const D* bias[2] = {nullptr, nullptr};
      if (has_bias) {
        bias_rows(bias, base, t, d, args.bias + (item % args.batch % args.bias_heads) * nnz, tile, options.async,
                  warp, lane);
      }
      to_log2_scores(scores, key_blocks, bias, scale_log2, lane);
      float tile_max[2] = {kNegativeInfinity, kNegativeInfinity};
      bool nan_seen[2] = {false, false};
#pragma unroll
      for (int n = 0; n < kKeyBlocks; ++n) {
        if (n >= key_blocks) continue;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int h = i / 2, column = n * 8 + pair + i % 2;
          float x = scores[n].x[i];
          if (column >= tile_keys) x = kNegativeInfinity;
          nan_seen[h] |= isnan(x);
          tile_max[h] = fmaxf(tile_max[h], x);
          scores[n].x[i] = x;
        }
      }
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        tile_max[h] = fmaxf(tile_max[h], shuffle_xor(tile_max[h], 1));
        tile_max[h] = fmaxf(tile_max[h], shuffle_xor(tile_max[h], 2));
        poisoned[h] |= nan_seen[h];  // combined over the row's four lanes at the end
        const float new_max = fmaxf(row_max[h], tile_max[h]);
        if (!single_tile) {
          // exp2(-inf) = 0 drops what came before a first finite score; nothing finite yet: keep 1.
          const float correction = new_max == kNegativeInfinity ? 1.f : fast_exp2(row_max[h] - new_max);
          row_sum[h] *= correction;
#pragma unroll
          for (int n = 0; n < kValueBlocks; ++n) {
            output[n].x[2 * h] *= correction;
            output[n].x[2 * h + 1] *= correction;
          }
        }
        row_max[h] = new_max;
      }

      // P, in place of S (0 where the score is -inf, and for rows without a finite score).
#pragma unroll
      for (int n = 0; n < kKeyBlocks; ++n) {
        if (n >= key_blocks) continue;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int h = i / 2;
          const float weight = row_max[h] == kNegativeInfinity ? 0.f : fast_exp2(scores[n].x[i] - row_max[h]);
          scores[n].x[i] = weight;
          row_sum[h] += weight;
        }
      }

      // O += P V.
      accumulate_weighted(output, scores, key_blocks, values, t.value_stride, value_pairs, lane);

      if (tile + 1 == d.tiles) {
        // The row's four lanes combine their sums and NaN flags; write out = O / sum and lse.
        const index_t problem = item % args.batch;
        D* out_problem = args.out + args.out_layout.problem_offset(problem, args.heads);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          float sum = row_sum[h];
          sum += shuffle_xor(sum, 1);
          sum += shuffle_xor(sum, 2);
          bool nan_row = poisoned[h];
          nan_row |= shuffle_xor(static_cast<int>(nan_row), 1) != 0;
          nan_row |= shuffle_xor(static_cast<int>(nan_row), 2) != 0;
          if (nan_row) sum = __int_as_float(0x7fc00000);
          const bool has_weight = sum != 0.f;  // true for NaN
          const float factor = has_weight ? 1.f / sum : 0.f;
          const int r = group + 8 * h;
          if (r >= rows) continue;
          const index_t row = d.row_ids[warp * 16 + r];
          if (lane % 4 == 0) {
            args.lse[problem * args.rows + row] = has_weight ? row_max[h] * kLn2 + logf(sum) : kNegativeInfinity;
          }
          D* out_row = out_problem + row * args.out_layout.row_stride;
#pragma unroll
          for (int n = 0; n < kValueBlocks; ++n) {
            const int column = n * 8 + pair;
            if (column >= args.value_dim) continue;
            const float x0 = output[n].x[2 * h] * factor, x1 = output[n].x[2 * h + 1] * factor;
            if (options.pair_stores) {
              *reinterpret_cast<std::uint32_t*>(out_row + column) = pack2<D>(x0, x1);
            } else {
              out_row[column] = from_float<D>(x0);
              if (column + 1 < args.value_dim) out_row[column + 1] = from_float<D>(x1);
            }
          }
        }
      }
    }

    __syncthreads();  // every warp is done with this stage (and descriptor) before they are refilled
    if (!has_next) break;
    item = next_item;
    tile = next_tile;
    slot = next_slot;
    stage ^= 1;
  }
  cp_async_wait<0>();  // (the last commit was an empty group)
#elif defined(__CUDA_ARCH__)
  __trap();  // compiled for a device below sm_80: the launcher never starts it there (mma_kernel_ready)
#endif
}

}  // namespace spattn::cuda::detail

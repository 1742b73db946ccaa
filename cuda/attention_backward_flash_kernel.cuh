#pragma once
// The fused attention backward over the execution plan on tensor cores (float16 and bfloat16), with the
// forward's loading scheme (attention_forward_flash_kernel.cuh): a persistent grid walking contiguous ranges
// of work items, the plan's steps decoded once, every unit's operands gathered by cp.async into a two-stage
// ring while the previous unit computes.
//
// Work item = (step, problem set). A problem set is one problem, or, when the bias gradient is wanted, the
// problems of one bias head in one chunk (head h, chunk c: problems h + bias_heads (c P + j), j < P): the
// item then sums its problems' score gradients in registers and writes its slice of the bias gradient's
// partial sums once (see attention_backward_flash.cu for the chunks and the final sum). Per problem and key
// tile, warp w of the step, for its 16 rows:
//   S = Q K^T, P = exp2(S scale log2(e) + bias log2(e) - lse log2(e))     registers
//   dP = dO V^T, dS = P (dP - delta), delta = rowsum(dO O)               registers
//   dQ += dS K                                                           registers, written after the last tile
// then P and dS go to shared memory and, after a block barrier, each task reduces over its rows
//   dV = P^T dO,  dK = scale dS^T Q
// for its key blocks (16 keys per warp and pass) and writes the columns its group owns: all their entries
// lie in this group of at most kStepRows rows, so these sums are complete (spattn/plan.hpp). Under
// grouped-query attention they are complete for one query problem only: they go, as floats, to the
// workspace's per-query-problem partials, which the caller then sums over each k/v head's query problems
// (attention_backward.cu says why). The caller's column pass computes the plan's unowned columns. A gradient
// reaching lse (args.grad_lse) folds into delta. No atomics: deterministic.

#include "flash_fragments.cuh"

namespace spattn::cuda::detail {

// Blocks per SM the kernel is compiled for (a register budget for ptxas); the two stages and the P and dS
// tiles take about 90, 131 and 212 KiB of shared memory for dims up to 32, 64 and 128 (with a bias).
template <int kMaxDim>
constexpr int flash_backward_blocks_per_sm() {
  return kMaxDim <= 32 ? 2 : 1;
}

// What the launcher decided (attention_backward_flash.cu).
struct FlashBackwardOptions {
  FlashOptions gathers;
  index_t problem_sets;          // batch, or bias_heads * chunks with a bias gradient
  index_t problems_per_chunk;    // P (1 without a bias gradient)
  float* __restrict__ bias_sums; // [chunks, bias_heads, nnz] partial sums of dBias, or null
};

template <typename D, int kMaxDim>
__global__ void __launch_bounds__(kFlashThreads, flash_backward_blocks_per_sm<kMaxDim>())
    attention_backward_flash_kernel(const BackwardArguments<D> args, const FlashBackwardOptions options) {
#if SPATTN_FLASH_DEVICE_CODE
  constexpr int kHeadSteps = kMaxDim / 16;   // k16 steps over head dims (S = Q K^T)
  constexpr int kValueSteps = kMaxDim / 16;  // k16 steps over value dims (dP = dO V^T)
  constexpr int kOutBlocks = kMaxDim / 8;    // n8 blocks of dQ
  constexpr int kPartBlocks = kOutBlocks < 8 ? kOutBlocks : 8;  // n8 blocks of dK and dV per pass
  SPATTN_DYNAMIC_SHARED(float4, shared_vectors);
  char* shared = reinterpret_cast<char*>(shared_vectors);
  const bool has_bias = args.bias != nullptr;
  const bool sum_bias = options.bias_sums != nullptr;
  const FlashLayout t =
      flash_layout(static_cast<int>(args.head_dim), static_cast<int>(args.value_dim), has_bias, true, sum_bias);
  StepDescriptor* descriptors = reinterpret_cast<StepDescriptor*>(shared + t.descriptors);
  float* score_sums = sum_bias ? reinterpret_cast<float*>(shared + t.score_sums) : nullptr;
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int group = lane / 4, pair = 2 * (lane % 4);
  const int head_steps = t.head_pad / 16, value_steps = t.value_pad / 16;
  const int head_pairs = t.head_pad / 16, value_pairs = t.value_pad / 16;
  const float scale_log2 = args.scale * kLog2e;
  const index_t nnz = args.row_offsets[args.rows];
  const index_t sets = options.problem_sets;
  const index_t heads_of_sets = sum_bias ? args.bias_heads : 1;

  const auto [first_item, last_item] = block_items(args.step_count * sets);
  if (first_item >= last_item) return;  // the whole block

  // Problem j of an item's set; -1 past the batch (a set with no problems still writes its zero partials:
  // it runs one "phantom" problem that loads nothing).
  const auto problem_of = [&](index_t item, index_t j) -> index_t {
    const index_t set = item % sets;
    if (!sum_bias) return set;
    const index_t head = set % heads_of_sets, chunk = set / heads_of_sets;
    const index_t problem = head + args.bias_heads * (chunk * options.problems_per_chunk + j);
    return problem < args.batch ? problem : -1;
  };
  const auto problems_in_set = [&](index_t item) -> index_t {
    if (!sum_bias) return 1;
    // Head h has ceil((batch - h) / bias_heads) problems; chunk c takes up to P of them from c P on.
    const index_t set = item % sets, head = set % heads_of_sets, chunk = set / heads_of_sets;
    const index_t of_head = head < args.batch ? (args.batch - head + args.bias_heads - 1) / args.bias_heads : 0;
    const index_t left = of_head - chunk * options.problems_per_chunk;
    return left < 1 ? 1 : left > options.problems_per_chunk ? options.problems_per_chunk : left;  // 1: the phantom
  };

  const auto issue = [&](index_t item, index_t j, int tile, const StepDescriptor& d, int stage) {
    const index_t problem = problem_of(item, j);
    if (problem < 0) return;
    char* base = shared + stage * t.stage_bytes;
    const bool async = options.gathers.async;
    gather_attention_operands<D>(base, t, d, args, problem, tile, nnz, async);
    // And the rows' out, dO and lse (every tile: a wide step re-reads them; the others have one tile).
    const auto row = [&](int r) { return d.row_ids[r]; };
    gather_tile(reinterpret_cast<D*>(base + t.grad_outputs), t.value_stride, t.value_pad, kFlashRows,
                args.grad_out + args.grad_out_layout.problem_offset(problem, args.heads),
                args.grad_out_layout.row_stride, args.value_dim, row, async);
    gather_tile(reinterpret_cast<D*>(base + t.outputs), t.value_stride, t.value_pad, kFlashRows,
                args.out + args.out_layout.problem_offset(problem, args.heads), args.out_layout.row_stride,
                args.value_dim, row, async);
    float* lse = reinterpret_cast<float*>(base + t.lse);
    for (int r = threadIdx.x; r < kFlashRows; r += kFlashThreads) {
      const index_t id = d.row_ids[r];
      const float* source = args.lse + problem * args.rows + (id >= 0 ? id : 0);
      if (async) {
        cp_async_4(lse + r, source, id >= 0 ? 4 : 0);
      } else {
        lse[r] = id >= 0 ? *source : 0.f;
      }
    }
  };

  // dQ of this lane's two rows, kept over a problem's key tiles.
  Accumulator grad_query[kOutBlocks];

  index_t item = first_item, j = 0;
  int tile = 0, slot = 0, stage = 0;
  index_t set_problems = 0;
  decode_step(args.steps, args.row_offsets, args.col_indices, args.group_offsets, args.group_rows,
              item / sets, descriptors[0]);
  set_problems = problems_in_set(item);
  issue(item, j, tile, descriptors[0], 0);
  cp_async_commit();

  while (true) {
    const StepDescriptor& d = descriptors[slot];
    // The next unit: the next key tile, else the set's next problem, else the next item.
    index_t next_item = item, next_j = j, next_set_problems = set_problems;
    int next_tile = tile + 1, next_slot = slot;
    if (next_tile >= d.tiles) {
      next_tile = 0;
      if (++next_j >= set_problems) {
        next_j = 0;
        next_item = item + 1;
        if (next_item < last_item) {
          next_set_problems = problems_in_set(next_item);
          if (next_item / sets != d.step) {
            next_slot = slot ^ 1;  // its previous user finished at the last trailing barrier
            decode_step(args.steps, args.row_offsets, args.col_indices, args.group_offsets, args.group_rows,
                        next_item / sets, descriptors[next_slot]);
          }
        }
      }
    }
    const bool has_next = next_item < last_item;
    if (has_next) issue(next_item, next_j, next_tile, descriptors[next_slot], stage ^ 1);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();

    const index_t problem = problem_of(item, j);
    const char* base = shared + stage * t.stage_bytes;
    const int rows = d.warp_rows[warp];
    const int task_first = d.warp_task_first[warp];
    const int remaining = d.warp_keys[warp] - tile * kFlashKeys;
    const int tile_keys = rows > 0 ? (remaining < kFlashKeys ? remaining : kFlashKeys) : 0;
    const int key_blocks = (tile_keys + 7) / 8;
    const bool single_tile = d.tiles == 1;
    const bool first_of_item = j == 0 && tile == 0;
    const bool last_of_item = j + 1 == set_problems && tile + 1 == d.tiles;
    const D* keys = reinterpret_cast<const D*>(base + t.keys) + d.warp_key_offset[warp] * t.key_stride;
    const D* values = reinterpret_cast<const D*>(base + t.values) + d.warp_key_offset[warp] * t.value_stride;

    // P and dS of the warp's rows; zeros for padding rows and keys (the reductions below read them).
    Accumulator weights[kKeyBlocks], grad_weights[kKeyBlocks];
#pragma unroll
    for (int n = 0; n < kKeyBlocks; ++n) weights[n] = grad_weights[n] = Accumulator{};
    // This lane's entries of the dS sums over the item's problems (single-tile steps; each lane only ever
    // touches its own: no barrier).
    float* my_sums[2] = {nullptr, nullptr};
    if (sum_bias && single_tile) {
#pragma unroll
      for (int h = 0; h < 2; ++h) my_sums[h] = score_sums + (warp * 16 + group + 8 * h) * kScoreStride + pair;
      if (first_of_item) {
#pragma unroll
        for (int n = 0; n < kKeyBlocks; ++n) {
#pragma unroll
          for (int i = 0; i < 4; ++i) my_sums[i / 2][n * 8 + i % 2] = 0.f;
        }
      }
    }

    if (rows > 0 && problem >= 0) {
      const D* queries = reinterpret_cast<const D*>(base + t.queries) + warp * 16 * t.key_stride;
      const D* grad_outputs = reinterpret_cast<const D*>(base + t.grad_outputs) + warp * 16 * t.value_stride;
      if (tile == 0) {
#pragma unroll
        for (int n = 0; n < kOutBlocks; ++n) grad_query[n] = Accumulator{};
      }
      // The row terms: delta = rowsum(dO * O) (the row's four lanes take interleaved pairs) and lse.
      const D* outputs = reinterpret_cast<const D*>(base + t.outputs) + warp * 16 * t.value_stride;
      const float* lse = reinterpret_cast<const float*>(base + t.lse) + warp * 16;
      float row_delta[2], row_lse[2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int r = group + 8 * h;
        float delta = 0.f;
        for (int e = pair; e < args.value_dim; e += 8) {
          delta = fmaf(to_float(outputs[r * t.value_stride + e]), to_float(grad_outputs[r * t.value_stride + e]), delta);
          if (e + 1 < args.value_dim) {
            delta = fmaf(to_float(outputs[r * t.value_stride + e + 1]),
                         to_float(grad_outputs[r * t.value_stride + e + 1]), delta);
          }
        }
        delta += shuffle_xor(delta, 1);
        delta += shuffle_xor(delta, 2);
        // d lse / d S = P: a gradient reaching lse enters dS = P (dP - delta) as part of delta.
        if (args.grad_lse != nullptr && r < rows) {
          delta -= args.grad_lse[problem * args.rows + d.row_ids[warp * 16 + r]];
        }
        row_delta[h] = delta;
        row_lse[h] = lse[r] * kLog2e;
        if (tile == 0 && r < rows && lane % 4 == 0) args.delta[problem * args.rows + d.row_ids[warp * 16 + r]] = delta;
      }

      // S = Q K^T, then P in place (log2 domain); lse = -inf (a row without a finite score): P = 0.
      row_products<kHeadSteps>(weights, queries, t.key_stride, head_steps, keys, t.key_stride, key_blocks, lane);
      const D* bias[2] = {nullptr, nullptr};
      if (has_bias) {
        bias_rows(bias, base, t, d, args.bias + (problem % args.bias_heads) * nnz, tile, options.gathers.async, warp,
                  lane);
      }
      to_log2_scores(weights, key_blocks, bias, scale_log2, lane);
#pragma unroll
      for (int n = 0; n < kKeyBlocks; ++n) {
        if (n >= key_blocks) continue;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int h = i / 2, column = n * 8 + pair + i % 2;
          const bool valid = group + 8 * h < rows && column < tile_keys && row_lse[h] != kNegativeInfinity;
          weights[n].x[i] = valid ? fast_exp2(weights[n].x[i] - row_lse[h]) : 0.f;
        }
      }
      // dP = dO V^T, then dS = P (dP - delta) in place.
      row_products<kValueSteps>(grad_weights, grad_outputs, t.value_stride, value_steps, values, t.value_stride,
                                key_blocks, lane);
#pragma unroll
      for (int n = 0; n < kKeyBlocks; ++n) {
        if (n >= key_blocks) continue;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          grad_weights[n].x[i] = weights[n].x[i] * (grad_weights[n].x[i] - row_delta[i / 2]);
        }
      }
      // dQ += dS K (scaled when written).
      accumulate_weighted(grad_query, grad_weights, key_blocks, keys, t.key_stride, head_pairs, lane);
    }

    // dBias: dS summed over the item's problems (single-tile steps: in shared memory, written once at the
    // item's end); a wide step's tiles read-modify-write the partial sums, problem after problem (the same
    // entries by the same lane).
    if (sum_bias && rows > 0) {
      float* bias_sums = options.bias_sums + (item % sets) * nnz;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int r = group + 8 * h;
        float* sums = bias_sums + d.row_entries[warp * 16 + r] + static_cast<index_t>(tile) * kFlashKeys;
#pragma unroll
        for (int n = 0; n < kKeyBlocks; ++n) {
#pragma unroll
          for (int i = 0; i < 2; ++i) {
            const int column = n * 8 + pair + i;
            const float value = grad_weights[n].x[2 * h + i];
            if (single_tile) {
              my_sums[h][n * 8 + i] += value;
              if (last_of_item && r < rows && column < tile_keys) sums[column] = my_sums[h][n * 8 + i];
            } else if (r < rows && column < tile_keys) {
              sums[column] = j == 0 ? value : sums[column] + value;
            }
          }
        }
      }
    }

    // dQ of the warp's rows after the problem's last tile.
    if (rows > 0 && problem >= 0 && tile + 1 == d.tiles) {
      D* grad_q_problem = args.grad_q + problem * args.rows * args.head_dim;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int r = group + 8 * h;
        if (r >= rows) continue;
        D* grad_row = grad_q_problem + d.row_ids[warp * 16 + r] * args.head_dim;
#pragma unroll
        for (int n = 0; n < kOutBlocks; ++n) {
          const int column = n * 8 + pair;
          if (column >= args.head_dim) continue;
          const float x0 = grad_query[n].x[2 * h] * args.scale, x1 = grad_query[n].x[2 * h + 1] * args.scale;
          if (args.head_dim % 2 == 0) {
            *reinterpret_cast<std::uint32_t*>(grad_row + column) = pack2<D>(x0, x1);
          } else {
            grad_row[column] = from_float<D>(x0);
            if (column + 1 < args.head_dim) grad_row[column + 1] = from_float<D>(x1);
          }
        }
      }
    }

    // dK and dV of owned columns: tasks whose group fits one step (block-uniform: the descriptor decides).
    bool reduce_columns = false;
#pragma unroll
    for (int w = 0; w < kFlashWarps; ++w) {
      reduce_columns |= d.warp_rows[w] > 0 && d.warp_group_size[w] <= kStepRows;
    }
    if (reduce_columns && problem >= 0) {
      // P and dS of every warp's rows into shared memory (over the stage's keys and values when they are
      // large enough: once every warp is done with them), then the task's warps split its key blocks.
      char* score_base = t.scores_in_stage ? shared + stage * t.stage_bytes : shared;
      D* probabilities = reinterpret_cast<D*>(score_base + t.probabilities);
      D* grad_scores = reinterpret_cast<D*>(score_base + t.grad_scores);
      if (t.scores_in_stage) __syncthreads();
#pragma unroll
      for (int n = 0; n < kKeyBlocks; ++n) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int at = (warp * 16 + group + 8 * h) * kScoreStride + n * 8 + pair;
          *reinterpret_cast<std::uint32_t*>(probabilities + at) =
              pack2<D>(weights[n].x[2 * h], weights[n].x[2 * h + 1]);
          *reinterpret_cast<std::uint32_t*>(grad_scores + at) =
              pack2<D>(grad_weights[n].x[2 * h], grad_weights[n].x[2 * h + 1]);
        }
      }
      __syncthreads();
      if (rows > 0 && d.warp_group_size[warp] <= kStepRows) {
        const int task_warps = d.warp_task_warps[warp], index_in_task = warp - task_first;
        const int row_steps = task_warps;  // k16 steps over the task's rows
        const int first_row = task_first * 16;
        const D* queries = reinterpret_cast<const D*>(base + t.queries) + first_row * t.key_stride;
        const D* grad_outputs = reinterpret_cast<const D*>(base + t.grad_outputs) + first_row * t.value_stride;
        const D* task_probabilities = probabilities + first_row * kScoreStride;
        const D* task_grad_scores = grad_scores + first_row * kScoreStride;
        const index_t group_size = d.warp_group_size[warp];
        const index_t key_base = d.warp_key_offset[warp];
        for (int block = index_in_task; block * 16 < tile_keys; block += task_warps) {
          // This lane's two keys of the block (accumulator rows group, group + 8) and whether the group owns them.
          bool owned[2];
          index_t column_of[2];
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const int key = block * 16 + group + 8 * h;
            const index_t column = key < tile_keys ? tile_key(d, args.col_indices, static_cast<int>(key_base) + key, tile) : -1;
            column_of[h] = column;
            owned[h] = column >= 0 && args.transposed_row_offsets[column + 1] - args.transposed_row_offsets[column] == group_size;
          }
          // dV = P^T dO, then dK = scale dS^T Q, over the task's rows.
#pragma unroll 1
          for (int which = 0; which < 2; ++which) {
            const D* weights_tile = which == 0 ? task_probabilities : task_grad_scores;
            const D* rows_tile = which == 0 ? grad_outputs : queries;
            const int stride = which == 0 ? t.value_stride : t.key_stride;
            const int pairs = which == 0 ? value_pairs : head_pairs;
            const index_t dim = which == 0 ? args.value_dim : args.head_dim;
            D* destination = which == 0 ? args.grad_v + problem * args.cols * args.value_dim
                                        : args.grad_k + problem * args.cols * args.head_dim;
            // Grouped-query attention: this query problem's share, as floats (null otherwise).
            float* partial = args.key_partial == nullptr ? nullptr
                             : which == 0 ? args.value_partial + problem * args.cols * args.value_dim
                                          : args.key_partial + problem * args.cols * args.head_dim;
            const float factor = which == 0 ? 1.f : args.scale;
            // At most 64 dims per pass, so few registers hold the sums.
#pragma unroll 1
            for (int first_pair = 0; first_pair < pairs; first_pair += kPartBlocks / 2) {
              Accumulator sums[kPartBlocks];
#pragma unroll
              for (int n = 0; n < kPartBlocks; ++n) sums[n] = Accumulator{};
              for (int k = 0; k < row_steps; ++k) {
                // A = W^T (16 keys x 16 rows) from the [row][key] tile, transposed by ldmatrix.
                std::uint32_t a[4];
                ldmatrix_x4_trans(a, weights_tile + (k * 16 + lane / 16 * 8 + lane % 8) * kScoreStride +
                                         block * 16 + lane / 8 % 2 * 8);
                const D* row = rows_tile + (k * 16 + lane % 16) * stride + lane / 16 * 8 + first_pair * 16;
#pragma unroll
                for (int p = 0; p < kPartBlocks / 2; ++p) {
                  if (first_pair + p >= pairs) continue;
                  std::uint32_t b[4];
                  ldmatrix_x4_trans(b, row + p * 16);
                  mma_m16n8k16<D>(sums[2 * p], a, {b[0], b[1]});
                  mma_m16n8k16<D>(sums[2 * p + 1], a, {b[2], b[3]});
                }
              }
#pragma unroll
              for (int h = 0; h < 2; ++h) {
                if (!owned[h]) continue;
                D* out_row = destination + column_of[h] * dim + first_pair * 16;
#pragma unroll
                for (int n = 0; n < kPartBlocks; ++n) {
                  const int column = n * 8 + pair;
                  if (first_pair * 16 + column >= dim) continue;
                  const float x0 = sums[n].x[2 * h] * factor, x1 = sums[n].x[2 * h + 1] * factor;
                  if (partial != nullptr) {
                    float* partial_row = partial + column_of[h] * dim + first_pair * 16;
                    partial_row[column] = x0;
                    if (first_pair * 16 + column + 1 < dim) partial_row[column + 1] = x1;
                  } else if (dim % 2 == 0) {
                    *reinterpret_cast<std::uint32_t*>(out_row + column) = pack2<D>(x0, x1);
                  } else {
                    out_row[column] = from_float<D>(x0);
                    if (first_pair * 16 + column + 1 < dim) out_row[column + 1] = from_float<D>(x1);
                  }
                }
              }
            }
          }
        }
      }
    }

    __syncthreads();  // every warp is done with this stage, the descriptor and the P / dS tiles
    if (!has_next) break;
    item = next_item;
    j = next_j;
    tile = next_tile;
    slot = next_slot;
    set_problems = next_set_problems;
    stage ^= 1;
  }
  cp_async_wait<0>();
#elif defined(__CUDA_ARCH__)
  __trap();  // compiled for a device below sm_80: the launcher never starts it there (mma_kernel_ready)
#endif
}

}  // namespace spattn::cuda::detail

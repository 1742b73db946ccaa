#pragma once
// What the register-resident tensor-core kernels (attention_*_flash_kernel.cuh, float16 and bfloat16) share:
// the step of the plan's schedule a block works on, decoded into shared memory, the shared-memory stages its
// operands are gathered into with cp.async, and the gathers themselves.
//
// A step (spattn/plan.hpp) is up to kStepWarps warp tasks of kWarpRows rows; its tasks' keys sit side by side
// in the stage, each task's padded to a multiple of 16. A block walks a contiguous range of work items
// (step, problem) in step-major order, so consecutive items almost always share their step: the step's row
// and column indices are decoded once into a StepDescriptor and serve every problem (only the problem's base
// offsets change). Stages form a two-deep ring: while the block computes an item, the next item's q, k, v and
// bias are in flight.

#include "attention_arguments.cuh"
#include "attention_mma.hpp"
#include "spattn/plan.hpp"
#include "warp_primitives.cuh"

// Kernel bodies compile for sm_80 and newer (bfloat16 mma, cp.async); the host never launches them on older
// devices (mma_kernel_ready). The C++ tests run the same bodies on the CPU (cpp/tests/cuda_emulation.hpp).
#if (defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800) || defined(SPATTN_CUDA_EMULATION)
#define SPATTN_FLASH_DEVICE_CODE 1
#else
#define SPATTN_FLASH_DEVICE_CODE 0
#endif

namespace spattn::cuda::detail {

constexpr int kFlashWarps = static_cast<int>(kStepWarps);
constexpr int kFlashThreads = 32 * kFlashWarps;
constexpr int kFlashRows = static_cast<int>(kStepRows);  // rows of a stage
constexpr int kFlashKeys = static_cast<int>(kStepKeys);  // keys of a stage (one key tile)
constexpr int kKeyBlocks = kFlashKeys / 8;               // n8 blocks of a key tile
constexpr int kPiece = 8;                                // 16-bit elements per 16-byte copy
// A row's bias run (at most kFlashKeys entries) is copied from its 16-byte aligned start: up to 7 elements
// before it and a partial last piece.
constexpr int kBiasStride = kFlashKeys + kPiece;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

__host__ __device__ constexpr int round_up_to(int n, int multiple) { return (n + multiple - 1) / multiple * multiple; }
// A row of `padded` 16-bit elements plus 16 bytes: the 8 rows an ldmatrix reads fall on distinct banks.
__host__ __device__ constexpr int tile_stride(int padded) { return padded + kPiece; }

__device__ __forceinline__ float fast_exp2(float x) {
#if defined(SPATTN_CUDA_EMULATION)
  return std::exp2(x);
#elif defined(__CUDA_ARCH__)
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#else
  return x;  // host pass: never called
#endif
}

// The step a block is on, decoded into shared memory (see decode_step).
struct StepDescriptor {
  index_t step;  // -1: none decoded yet
  int tiles;     // key tiles the step takes (more than one only for a wide task, which is then alone)
  int warp_rows[kFlashWarps];        // valid rows of each warp (0: an idle warp)
  int warp_task_first[kFlashWarps];  // the first warp of the warp's task
  int warp_task_warps[kFlashWarps];  // warps of the warp's task
  int warp_key_offset[kFlashWarps];  // the task's first key slot in the stage
  int warp_keys[kFlashWarps];        // the task's columns (over all tiles)
  index_t warp_group_size[kFlashWarps];
  index_t warp_group_begin[kFlashWarps];     // the group's first entry of group_rows
  index_t warp_first_row[kFlashWarps];       // the warp's first row within its group
  index_t warp_column_begin[kFlashWarps];    // the task's first entry of col_indices
  index_t row_ids[kFlashRows];     // the pattern row of each stage row, -1 for padding
  index_t row_entries[kFlashRows]; // row_offsets[row]: the CSR entry of the row's first column
  index_t key_ids[kFlashKeys];     // the column of each key slot (tile 0; wide tasks read theirs per tile)
};

// Keys of a task in the stage: its columns in one tile, padded to 16 (two n8 blocks: one k16 step).
__device__ __forceinline__ int task_key_width(int keys) { return round_up_to(keys < kFlashKeys ? keys : kFlashKeys, 16); }

// Decodes step `step` into `d`. Called by every thread of the block between barriers (it has its own).
__device__ __forceinline__ void decode_step(const index_t* __restrict__ steps, const index_t* __restrict__ row_offsets,
                                            const index_t* __restrict__ col_indices,
                                            const index_t* __restrict__ group_offsets,
                                            const index_t* __restrict__ group_rows, index_t step,
                                            StepDescriptor& d) {
  const int tid = static_cast<int>(threadIdx.x);
  if (tid < kFlashWarps) {
    const index_t group = steps[(step * kStepWarps + tid) * 2];
    const index_t first_row = steps[(step * kStepWarps + tid) * 2 + 1];
    int rows = 0, keys = 0;
    index_t size = 0, begin = 0, column_begin = 0;
    if (group >= 0) {
      begin = group_offsets[group];
      size = group_offsets[group + 1] - begin;
      const index_t row = group_rows[begin];
      column_begin = row_offsets[row];
      keys = static_cast<int>(row_offsets[row + 1] - column_begin);
      rows = static_cast<int>(size - first_row < kWarpRows ? size - first_row : kWarpRows);
    }
    d.warp_rows[tid] = rows;
    d.warp_keys[tid] = keys;
    d.warp_group_size[tid] = size;
    d.warp_group_begin[tid] = begin;
    d.warp_first_row[tid] = first_row;
    d.warp_column_begin[tid] = column_begin;
  }
  __syncthreads();
  if (tid == 0) {
    // Tasks: runs of warps of one group with consecutive rows (spattn/plan.hpp).
    int key_offset = 0, first = 0, tiles = 1;
    for (int w = 0; w < kFlashWarps; ++w) {
      const bool continues = w > 0 && d.warp_rows[w] > 0 && d.warp_rows[w - 1] > 0 &&
                             d.warp_group_begin[w] == d.warp_group_begin[w - 1] &&
                             d.warp_first_row[w] == d.warp_first_row[w - 1] + kWarpRows;
      if (!continues) {
        if (w > 0) key_offset += task_key_width(d.warp_rows[first] > 0 ? d.warp_keys[first] : 0);
        first = w;
      }
      d.warp_task_first[w] = first;
      d.warp_key_offset[w] = key_offset;
      if (d.warp_rows[w] > 0) {
        const int task_tiles = (d.warp_keys[w] + kFlashKeys - 1) / kFlashKeys;
        tiles = task_tiles > tiles ? task_tiles : tiles;
      }
    }
    for (int w = 0; w < kFlashWarps; ++w) {
      int warps = 0;
      for (int v = 0; v < kFlashWarps; ++v) warps += d.warp_task_first[v] == d.warp_task_first[w];
      d.warp_task_warps[w] = warps;
    }
    d.tiles = tiles;
    d.step = step;
  }
  __syncthreads();
  if (tid < kFlashRows) {
    const int w = tid / static_cast<int>(kWarpRows), i = tid % static_cast<int>(kWarpRows);
    index_t row = -1, entry = 0;
    if (i < d.warp_rows[w]) {
      row = group_rows[d.warp_group_begin[w] + d.warp_first_row[w] + i];
      entry = row_offsets[row];
    }
    d.row_ids[tid] = row;
    d.row_entries[tid] = entry;
  } else if (tid < kFlashRows + kFlashKeys) {
    const int slot = tid - kFlashRows;
    index_t column = -1;
    for (int w = 0; w < kFlashWarps; ++w) {
      if (d.warp_rows[w] == 0 || d.warp_task_first[w] != w) continue;
      const int local = slot - d.warp_key_offset[w];
      if (local >= 0 && local < d.warp_keys[w] && local < kFlashKeys) column = col_indices[d.warp_column_begin[w] + local];
    }
    d.key_ids[slot] = column;
  }
  __syncthreads();
}

// ---- the shared memory of a block ---------------------------------------------------------------------
// Byte offsets; host and device compute the same. Two stages, each holding one work item's operands in the
// storage type (rows padded to head_pad / value_pad elements with zeros, strides from tile_stride), then
// the two step descriptors (the current step and the next one), then the backward's float sums of dS over
// an item's problems (for the bias gradient). The backward's P and dS tiles reuse the current stage's keys
// and values once every warp is done with them.
struct FlashLayout {
  int head_pad, value_pad;        // head_dim and value_dim rounded up to 16
  int key_stride, value_stride;   // row strides (elements) of q, k and dq-side tiles; of v, out and dO tiles
  int queries, keys, values, bias, outputs, grad_outputs, lse;  // offsets within a stage (-1: absent)
  int stage_bytes;
  int descriptors;                // two StepDescriptors
  int score_sums;                 // backward with a bias gradient: [kFlashRows][kScoreStride] floats
  // The backward's P and dS tiles, [kFlashRows][kScoreStride] each: in the current stage's keys and values
  // when those are large enough (dims above 48), else after the descriptors.
  bool scores_in_stage;
  int probabilities, grad_scores;
  int bytes;
};

__host__ __device__ constexpr int align_128(int bytes) { return (bytes + 127) / 128 * 128; }
constexpr int kScoreStride = kFlashKeys + kPiece;  // row stride of the backward's P, dS and dS-sum tiles

__host__ __device__ inline FlashLayout flash_layout(int head_dim, int value_dim, bool has_bias, bool backward,
                                                    bool sum_bias = false) {
  FlashLayout t{};
  t.head_pad = round_up_to(head_dim, 16);
  t.value_pad = round_up_to(value_dim, 16);
  t.key_stride = tile_stride(t.head_pad);
  t.value_stride = tile_stride(t.value_pad);
  int at = 0;
  const auto take = [&at](int bytes) {
    const int offset = at;
    at += align_128(bytes);
    return offset;
  };
  t.queries = take(kFlashRows * t.key_stride * 2);
  t.keys = take(kFlashKeys * t.key_stride * 2);
  t.values = take(kFlashKeys * t.value_stride * 2);
  t.bias = has_bias ? take(kFlashRows * kBiasStride * 2) : -1;
  t.outputs = backward ? take(kFlashRows * t.value_stride * 2) : -1;
  t.grad_outputs = backward ? take(kFlashRows * t.value_stride * 2) : -1;
  t.lse = backward ? take(kFlashRows * 4) : -1;
  t.stage_bytes = at;
  at = 2 * t.stage_bytes;
  t.descriptors = take(2 * static_cast<int>(sizeof(StepDescriptor)));
  t.score_sums = backward && sum_bias ? take(kFlashRows * kScoreStride * 4) : -1;
  const int score_tile = kFlashRows * kScoreStride * 2;
  t.scores_in_stage = kFlashKeys * t.key_stride * 2 >= score_tile && kFlashKeys * t.value_stride * 2 >= score_tile;
  if (!backward) {
    t.probabilities = t.grad_scores = -1;
  } else if (t.scores_in_stage) {
    t.probabilities = t.keys;  // (within the stage)
    t.grad_scores = t.values;
  } else {
    t.probabilities = take(score_tile);
    t.grad_scores = take(score_tile);
  }
  t.bytes = at;
  return t;
}

// ---- gathers --------------------------------------------------------------------------------------------
// How a launch may gather: with 16-byte cp.async copies when every operand row starts 16-byte aligned (base
// pointers, strides and dims multiples of 8 elements, an aligned bias), else element by element (the same
// layout in shared memory, zeros for padding, bias runs starting at phase 0).
struct FlashOptions {
  bool async;
  bool pair_stores;  // outputs written two elements (4 bytes) at a time: aligned base, even strides and dim
};

// The column of key slot `slot` of tile `tile` (-1 for padding). Only a wide task (alone in its step, at
// slot 0) has tiles past the first; its columns are read from the pattern per tile.
__device__ __forceinline__ index_t tile_key(const StepDescriptor& d, const index_t* __restrict__ col_indices, int slot,
                                            int tile) {
  if (tile == 0) return d.key_ids[slot];
  const index_t local = static_cast<index_t>(tile) * kFlashKeys + slot;
  return local < d.warp_keys[0] ? col_indices[d.warp_column_begin[0] + local] : -1;
}

// Stage rows [0, rows) of `tile` (row stride `stride` elements, `padded` of them used) from rows ids[r] of
// `base` (row stride `row_stride`; -1: a zero row); elements past `dim` are zeros. Every thread calls it.
template <typename D, typename Ids>
__device__ __forceinline__ void gather_tile(D* __restrict__ tile, int stride, int padded, int rows, const D* __restrict__ base,
                                            index_t row_stride, index_t dim, const Ids& ids, bool async) {
  const int pieces = padded / kPiece;
  for (int e = threadIdx.x; e < rows * pieces; e += kFlashThreads) {
    const int r = e / pieces, piece = e % pieces;
    const index_t id = ids(r);
    const int first = piece * kPiece;
    D* destination = tile + r * stride + first;
    const D* source = base + (id >= 0 ? id * row_stride + first : 0);
    if (async) {
      cp_async_16(destination, source, id >= 0 && first < dim ? 16 : 0);
    } else {
      D values[kPiece];
#pragma unroll
      for (int i = 0; i < kPiece; ++i) values[i] = id >= 0 && first + i < dim ? source[i] : from_float<D>(0.f);
#pragma unroll
      for (int i = 0; i < kPiece; ++i) destination[i] = values[i];
    }
  }
}

// Where row r's bias run of the tile starts in the stage's bias tile: cp.async copies 16-byte aligned pieces,
// so the run starts at the phase of its first element's address (0 for element-wise gathers).
template <typename D>
__device__ __forceinline__ int bias_phase(const D* run, bool async) {
  return async ? static_cast<int>(reinterpret_cast<std::uintptr_t>(run) % 16 / sizeof(D)) : 0;
}

// The bias runs of the stage's rows for `tile`: row r's entries [tile * kFlashKeys, + its keys in the tile)
// of bias_head (the problem's bias row of the pattern, CSR order), into bias_tile[r][phase ..]. `end` is
// the end of the whole bias array (copies never read past it).
template <typename D>
__device__ __forceinline__ void gather_bias(D* __restrict__ bias_tile, const StepDescriptor& d, const D* __restrict__ bias_head,
                                            const D* __restrict__ end, int tile, bool async) {
  constexpr int kPiecesPerRow = kBiasStride / kPiece;
  for (int e = threadIdx.x; e < kFlashRows * kPiecesPerRow; e += kFlashThreads) {
    const int r = e / kPiecesPerRow, piece = e % kPiecesPerRow;
    if (d.row_ids[r] < 0) continue;
    const int w = r / static_cast<int>(kWarpRows);
    const int remaining = d.warp_keys[w] - tile * kFlashKeys;
    const int count = remaining < kFlashKeys ? remaining : kFlashKeys;
    const D* run = bias_head + d.row_entries[r] + static_cast<index_t>(tile) * kFlashKeys;
    D* destination = bias_tile + r * kBiasStride + piece * kPiece;
    if (async) {
      const int phase = bias_phase(run, true);
      if (piece * kPiece >= phase + count) continue;
      const D* source = run - phase + piece * kPiece;  // 16-byte aligned
      const std::ptrdiff_t left = (end - source) * static_cast<std::ptrdiff_t>(sizeof(D));
      cp_async_16(destination, source, left >= 16 ? 16 : static_cast<int>(left > 0 ? left : 0));
    } else {
#pragma unroll
      for (int i = 0; i < kPiece; ++i) {
        const int j = piece * kPiece + i;
        if (j < count) destination[i] = run[j];
      }
    }
  }
}

// What both kernels gather for (problem, tile) into a stage: q's rows of the step, the tile's keys and
// values, and the rows' bias runs. Args: GroupedArguments or BackwardArguments. Every thread calls it.
template <typename D, typename Args>
__device__ __forceinline__ void gather_attention_operands(char* stage, const FlashLayout& t, const StepDescriptor& d,
                                                          const Args& args, index_t problem, int tile, index_t nnz,
                                                          bool async) {
  gather_tile(reinterpret_cast<D*>(stage + t.queries), t.key_stride, t.head_pad, kFlashRows,
              args.q + args.q_layout.problem_offset(problem, args.heads), args.q_layout.row_stride, args.head_dim,
              [&](int r) { return d.row_ids[r]; }, async);
  const auto key = [&](int slot) { return tile_key(d, args.col_indices, slot, tile); };
  gather_tile(reinterpret_cast<D*>(stage + t.keys), t.key_stride, t.head_pad, kFlashKeys,
              args.k + args.k_layout.problem_offset(problem, args.heads), args.k_layout.row_stride, args.head_dim, key,
              async);
  gather_tile(reinterpret_cast<D*>(stage + t.values), t.value_stride, t.value_pad, kFlashKeys,
              args.v + args.v_layout.problem_offset(problem, args.heads), args.v_layout.row_stride, args.value_dim,
              key, async);
  if (args.bias != nullptr) {
    gather_bias(reinterpret_cast<D*>(stage + t.bias), d, args.bias + (problem % args.bias_heads) * nnz,
                args.bias + args.bias_heads * nnz, tile, async);
  }
}

// The contiguous range [first, last) of the `items` work items this block of a persistent grid takes.
struct ItemRange {
  index_t first, last;
};
__device__ __forceinline__ ItemRange block_items(index_t items) {
  const index_t per_block = (items + gridDim.x - 1) / gridDim.x;
  const index_t first = static_cast<index_t>(blockIdx.x) * per_block;
  return {first, first + per_block < items ? first + per_block : items};
}

// Whether a launch may gather an operand with 16-byte cp.async copies (host side): every row of every
// problem starts 16-byte aligned and holds a multiple of 8 elements.
template <typename D>
inline bool rows_copyable(const D* base, const OperandLayout& layout, index_t dim) {
  return rows_aligned_to(base, layout, kPiece) && dim % kPiece == 0;
}

}  // namespace spattn::cuda::detail

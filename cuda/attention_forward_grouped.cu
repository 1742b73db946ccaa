// Fused attention forward over the execution plan's groups (spattn/plan.hpp). All rows of a group attend to
// the same keys, so one thread block per (problem, group) gathers those keys and values into shared memory
// once, as floats, and every warp then serves rows of the group from there: the generic kernel re-reads 49
// keys and values from global memory for each of the 49 rows of a Swin window, this one reads them once.
//
// Per row (one warp): lane j scores columns j and j + 32 of the current tile against q (staged in shared
// memory; q and keys read as float4), the online softmax runs over tiles of kTileColumns columns, and lane j
// accumulates output dimensions j, j + 32, ... Groups wider than one tile stream their columns tile by tile
// for each chunk of kGroupedWarps rows; groups with no columns (empty rows) give zeros and lse -inf, like
// the generic kernel.

#include "attention_arguments.cuh"
#include "launcher_arguments.cuh"

namespace spattn::cuda {
namespace detail {
namespace {

constexpr int kGroupedWarps = kThreadsPerBlock / 32;
constexpr int kTileColumns = 64;  // a Swin window (49 keys) or an 8 x 8 window fits one tile
constexpr int kScoresPerLane = kTileColumns / 32;
constexpr int kVectorElements = 4;  // elements per vector load of k and v when aligned


// The dynamic shared memory, in floats: keys [kTileColumns][key_stride], values [kTileColumns][value_dim],
// then one q row [padded_head_dim] and one row of weights [kTileColumns] per warp. q and the key rows are
// padded with zeros to a multiple of 4 floats and read as float4; every offset is a multiple of 4 floats
// (16 bytes). A key row's stride is an odd number of float4, so the 8 lanes of a quarter warp reading 8
// consecutive keys hit 32 distinct banks.
// (int: head_dim and value_dim are at most max_grouped_attention_dim here.)
struct SharedLayout {
  int padded_head_dim, key_stride;
  int keys, values, queries, weights, total;
};
__host__ __device__ inline SharedLayout shared_layout(int head_dim, int value_dim) {
  SharedLayout layout{};
  layout.padded_head_dim = (head_dim + 3) / 4 * 4;
  layout.key_stride = (layout.padded_head_dim / 4 | 1) * 4;
  layout.keys = 0;
  layout.values = layout.keys + kTileColumns * layout.key_stride;
  layout.queries = layout.values + kTileColumns * value_dim;
  layout.weights = layout.queries + kGroupedWarps * layout.padded_head_dim;
  layout.total = layout.weights + kGroupedWarps * kTileColumns;
  return layout;
}

// Gathers k and v of the tile's columns (columns[0 .. tile_columns)) into shared memory as floats, key rows
// padded with zeros. All threads of the block call it together; the caller's barriers order it against
// readers.
template <typename D>
__device__ __forceinline__ void load_tile(const GroupedArguments<D>& args, const SharedLayout& layout,
                                          const index_t* __restrict__ columns, int tile_columns,
                                          const D* __restrict__ k_problem, const D* __restrict__ v_problem,
                                          float* __restrict__ keys, float* __restrict__ values) {
  const int head_dim = static_cast<int>(args.head_dim), value_dim = static_cast<int>(args.value_dim);
  const int padded_head_dim = layout.padded_head_dim, key_stride = layout.key_stride;
  if (args.vectorized) {  // head_dim == padded_head_dim
    using Vector = Packed<D, kVectorElements>;
    const int key_chunks = head_dim / kVectorElements, value_chunks = value_dim / kVectorElements;
    for (int e = threadIdx.x; e < tile_columns * key_chunks; e += blockDim.x) {
      const int j = e / key_chunks, chunk = e % key_chunks;
      const Vector packed = *reinterpret_cast<const Vector*>(k_problem + columns[j] * args.k_layout.row_stride +
                                                             chunk * kVectorElements);
      static_assert(kVectorElements == 4, "one float4 per vector");
      *reinterpret_cast<float4*>(keys + j * key_stride + chunk * kVectorElements) =
          make_float4(to_float(packed.values[0]), to_float(packed.values[1]), to_float(packed.values[2]),
                      to_float(packed.values[3]));
    }
    for (int e = threadIdx.x; e < tile_columns * value_chunks; e += blockDim.x) {
      const int j = e / value_chunks, chunk = e % value_chunks;
      const Vector packed = *reinterpret_cast<const Vector*>(v_problem + columns[j] * args.v_layout.row_stride +
                                                             chunk * kVectorElements);
#pragma unroll
      for (int i = 0; i < kVectorElements; ++i) {
        values[j * value_dim + chunk * kVectorElements + i] = to_float(packed.values[i]);
      }
    }
  } else {
    for (int e = threadIdx.x; e < tile_columns * padded_head_dim; e += blockDim.x) {
      const int j = e / padded_head_dim, d = e % padded_head_dim;
      keys[j * key_stride + d] = d < head_dim ? to_float(k_problem[columns[j] * args.k_layout.row_stride + d]) : 0.f;
    }
    for (int e = threadIdx.x; e < tile_columns * value_dim; e += blockDim.x) {
      const int j = e / value_dim, d = e % value_dim;
      values[j * value_dim + d] = to_float(v_problem[columns[j] * args.v_layout.row_stride + d]);
    }
  }
}

// The online-softmax state of one row, held by one warp: lane owns output dimensions lane + 32 * i.
template <int kValueSlots>
struct RowState {
  float accumulator[kValueSlots];
  float running_max;
  float running_sum;
  bool poisoned;  // a NaN score: fmaxf skips it, so it is tracked to reach the output as NaN (as generic)
};

template <int kValueSlots>
__device__ __forceinline__ void start_row(RowState<kValueSlots>& state) {
#pragma unroll
  for (int i = 0; i < kValueSlots; ++i) state.accumulator[i] = 0.f;
  state.running_max = kNegativeInfinity;
  state.running_sum = 0.f;
  state.poisoned = false;
}

// Stages the row's q in the warp's shared buffer (as floats, zeros up to padded_head_dim).
template <typename D>
__device__ __forceinline__ void stage_query(const GroupedArguments<D>& args, const SharedLayout& layout,
                                            index_t problem, index_t row, int lane, float* __restrict__ query) {
  const D* q_row = args.q + args.q_layout.problem_offset(problem, args.heads) + row * args.q_layout.row_stride;
  __syncwarp();  // every lane is done reading the previous row's q
  for (int d = lane; d < layout.padded_head_dim; d += 32) query[d] = d < args.head_dim ? to_float(q_row[d]) : 0.f;
  __syncwarp();
}

// Adds the tile's columns [tile_begin, tile_begin + tile_columns) of the group to the row's state.
// `bias_row` points at the bias entry of the row's first column (null: no bias). Called by a whole warp.
template <int kValueSlots, typename D>
__device__ __forceinline__ void accumulate_tile(const GroupedArguments<D>& args, const SharedLayout& layout,
                                                RowState<kValueSlots>& state, const float* __restrict__ keys,
                                                const float* __restrict__ values,
                                                const float* __restrict__ query, float* __restrict__ weights,
                                                const D* __restrict__ bias_row, index_t tile_begin, int tile_columns,
                                                int lane) {
  // Key rows past tile_columns hold stale shared memory (inside the allocation); their scores become -inf.
  float score[kScoresPerLane];
#pragma unroll
  for (int u = 0; u < kScoresPerLane; ++u) score[u] = 0.f;
  const int padded_head_dim = layout.padded_head_dim, key_stride = layout.key_stride;
  const int value_dim = static_cast<int>(args.value_dim);
#pragma unroll 2
  for (int d = 0; d < padded_head_dim; d += 4) {
    const float4 q4 = *reinterpret_cast<const float4*>(query + d);
#pragma unroll
    for (int u = 0; u < kScoresPerLane; ++u) {
      const float4 k4 = *reinterpret_cast<const float4*>(keys + (lane + 32 * u) * key_stride + d);
      score[u] = fmaf(q4.x, k4.x, score[u]);
      score[u] = fmaf(q4.y, k4.y, score[u]);
      score[u] = fmaf(q4.z, k4.z, score[u]);
      score[u] = fmaf(q4.w, k4.w, score[u]);
    }
  }
  float tile_max = kNegativeInfinity;
  bool nan_seen = false;
#pragma unroll
  for (int u = 0; u < kScoresPerLane; ++u) {
    const int j = lane + 32 * u;
    score[u] = j < tile_columns
                   ? score[u] * args.scale + (bias_row == nullptr ? 0.f : to_float(bias_row[tile_begin + j]))
                   : kNegativeInfinity;
    tile_max = fmaxf(tile_max, score[u]);
    nan_seen |= isnan(score[u]);
  }
  // Each lane holds other columns: the warp agrees on the flag and on the maximum.
  state.poisoned |= __any_sync(kFullWarp, nan_seen) != 0;
  tile_max = group_max<32>(tile_max, kFullWarp);
  const float new_max = fmaxf(state.running_max, tile_max);
  // Nothing but -inf so far: no weight to add (exp(-inf - -inf) would be NaN). Same value on every lane.
  if (new_max == kNegativeInfinity) return;
  const float correction = expf(state.running_max - new_max);  // 0 on the first finite score
  float tile_sum = 0.f;
  __syncwarp();  // every lane is done reading the previous tile's weights
#pragma unroll
  for (int u = 0; u < kScoresPerLane; ++u) {
    const float weight = expf(score[u] - new_max);  // 0 for padding and masked columns
    weights[lane + 32 * u] = weight;
    tile_sum += weight;
  }
  tile_sum = group_sum<32>(tile_sum, kFullWarp);
  state.running_sum = state.running_sum * correction + tile_sum;
#pragma unroll
  for (int i = 0; i < kValueSlots; ++i) state.accumulator[i] *= correction;
  __syncwarp();  // the weights are visible to every lane
  // Four weights per float4 (weights holds kTileColumns, a multiple of 4); value rows past tile_columns are
  // stale (possibly NaN) and never read.
  for (int j4 = 0; j4 < tile_columns; j4 += 4) {
    const float4 w4 = *reinterpret_cast<const float4*>(weights + j4);
    const float w[4] = {w4.x, w4.y, w4.z, w4.w};
#pragma unroll
    for (int t = 0; t < 4; ++t) {
      const int j = j4 + t;
      if (j < tile_columns) {
#pragma unroll
        for (int i = 0; i < kValueSlots; ++i) {
          const int d = lane + 32 * i;
          if (d < value_dim) state.accumulator[i] = fmaf(w[t], values[j * value_dim + d], state.accumulator[i]);
        }
      }
    }
  }
  state.running_max = new_max;
}

template <int kValueSlots, typename D>
__device__ __forceinline__ void finish_row(const GroupedArguments<D>& args, const RowState<kValueSlots>& state,
                                           index_t problem, index_t row, int lane) {
  // running_sum >= 1 once any score was finite (the maximum contributes exp(0)); NaN for a poisoned row.
  const float running_sum = state.poisoned ? __int_as_float(0x7fc00000) : state.running_sum;
  const bool has_weight = running_sum != 0.f;
  const float factor = has_weight ? 1.f / running_sum : 0.f;
  D* out_row = args.out + args.out_layout.problem_offset(problem, args.heads) + row * args.out_layout.row_stride;
#pragma unroll
  for (int i = 0; i < kValueSlots; ++i) {
    const int d = lane + 32 * i;
    if (d < args.value_dim) out_row[d] = from_float<D>(state.accumulator[i] * factor);
  }
  if (lane == 0) {
    args.lse[problem * args.rows + row] = has_weight ? state.running_max + logf(running_sum) : kNegativeInfinity;
  }
}

// Blocks per SM promised to the compiler: without a minimum ptxas caps the kernel at 64 registers and
// spills; these are the largest counts whose register budget compiles without spills (ptxas -v, sm_90).
template <int kValueSlots>
constexpr int grouped_min_blocks() {
  return kValueSlots == 2 ? 2 : 3;
}

// kValueSlots = ceil(value_dim / 32) output dimensions per lane (value_dim <= 32 * kValueSlots).
template <int kValueSlots, typename D>
__global__ void __launch_bounds__(kThreadsPerBlock, grouped_min_blocks<kValueSlots>())
    attention_forward_grouped_kernel(const GroupedArguments<D> args) {
  extern __shared__ float4 shared_vectors[];  // float4: the dynamic shared memory is 16-byte aligned
  float* shared = reinterpret_cast<float*>(shared_vectors);
  const SharedLayout layout = shared_layout(static_cast<int>(args.head_dim), static_cast<int>(args.value_dim));
  float* keys = shared + layout.keys;
  float* values = shared + layout.values;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* query = shared + layout.queries + warp * layout.padded_head_dim;
  float* weights = shared + layout.weights + warp * kTileColumns;
  const index_t nnz = args.row_offsets[args.rows];
  const index_t items = args.batch * args.groups;

  // Everything that decides a barrier below (item, group size, tile count) is the same for the whole block.
  for (index_t item = blockIdx.x; item < items; item += gridDim.x) {
    const index_t problem = item / args.groups, group = item % args.groups;
    const auto [group_size, rows, columns, column_count] =
        plan_group(args.row_offsets, args.col_indices, args.group_offsets, args.group_rows, group);
    const index_t tiles = (column_count + kTileColumns - 1) / kTileColumns;
    const D* k_problem = args.k + args.k_layout.problem_offset(problem, args.heads);
    const D* v_problem = args.v + args.v_layout.problem_offset(problem, args.heads);
    const D* bias_problem = args.bias == nullptr ? nullptr : args.bias + (problem % args.bias_heads) * nnz;

    if (tiles <= 1) {
      // The common case: the group's keys and values are loaded once for all of its rows.
      const int tile_columns = static_cast<int>(column_count);
      __syncthreads();  // the previous item is done with the tile
      if (tiles == 1) load_tile(args, layout, columns, tile_columns, k_problem, v_problem, keys, values);
      __syncthreads();
      for (index_t r = warp; r < group_size; r += kGroupedWarps) {
        const index_t row = rows[r];
        RowState<kValueSlots> state;
        start_row(state);
        if (tiles == 1) {
          stage_query(args, layout, problem, row, lane, query);
          const D* bias_row = bias_problem == nullptr ? nullptr : bias_problem + args.row_offsets[row];
          accumulate_tile(args, layout, state, keys, values, query, weights, bias_row, 0, tile_columns, lane);
        }
        finish_row(args, state, problem, row, lane);
      }
    } else {
      // Wide groups: for each chunk of kGroupedWarps rows (one per warp), stream the columns tile by tile.
      for (index_t chunk = 0; chunk < group_size; chunk += kGroupedWarps) {
        const index_t r = chunk + warp;
        const bool active = r < group_size;
        const index_t row = active ? rows[r] : 0;
        RowState<kValueSlots> state;
        start_row(state);
        if (active) stage_query(args, layout, problem, row, lane, query);
        for (index_t tile = 0; tile < tiles; ++tile) {
          const index_t tile_begin = tile * kTileColumns;
          const int tile_columns = static_cast<int>(
              column_count - tile_begin < kTileColumns ? column_count - tile_begin : kTileColumns);
          __syncthreads();  // every warp is done with the previous tile
          load_tile(args, layout, columns + tile_begin, tile_columns, k_problem, v_problem, keys, values);
          __syncthreads();
          if (active) {
            const D* bias_row = bias_problem == nullptr ? nullptr : bias_problem + args.row_offsets[row];
            accumulate_tile(args, layout, state, keys, values, query, weights, bias_row, tile_begin, tile_columns,
                            lane);
          }
        }
        if (active) finish_row(args, state, problem, row, lane);
      }
    }
  }
}

template <int kValueSlots, typename D>
void launch_grouped(const GroupedArguments<D>& args, index_t shared_bytes, cudaStream_t stream) {
  const auto kernel = attention_forward_grouped_kernel<kValueSlots, D>;
  if (shared_bytes > 48 * 1024) {
    // Above the default limit a kernel must opt in (per device; cheap, and legal during graph capture).
    SPATTN_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared_bytes)));
  }
  kernel<<<blocks_for(args.batch * args.groups, 1), kThreadsPerBlock, static_cast<std::size_t>(shared_bytes),
           stream>>>(args);
  SPATTN_CUDA_CHECK_LAUNCH();
}

}  // namespace
}  // namespace detail

template <typename T>
void attention_forward_grouped(CsrView pattern, GroupsView groups, const T* q, const T* k, const T* v, const T* bias,
                               AttentionDims dims, const AttentionLayouts& layouts, double scale, T* out,
                               accumulate_t<T>* lse, cudaStream_t stream) {
  using namespace detail;
  SPATTN_CHECK(dims.head_dim >= 0 && dims.value_dim >= 0, "attention_forward_grouped: negative size");
  check_attention_arguments("attention_forward_grouped", pattern, bias, dims, layouts);
  // Every row is in exactly one group (spattn::build_plan), so there are between 1 and rows groups when
  // there are rows; the kernel writes only rows listed in a group.
  SPATTN_CHECK(groups.groups >= 0 && groups.groups <= pattern.rows && (pattern.rows == 0) == (groups.groups == 0),
               "attention_forward_grouped: a plan of ", pattern.rows, " rows has 1 to ", pattern.rows,
               " groups, got ", groups.groups);
  SPATTN_CHECK(groups.step_count >= 0 && (groups.step_count == 0 || groups.steps != nullptr),
               "attention_forward_grouped: a schedule of ", groups.step_count, " steps has no array");
  if (dims.batch == 0 || pattern.rows == 0) return;
  SPATTN_CHECK(groups.group_offsets != nullptr && groups.group_rows != nullptr,
               "attention_forward_grouped: the plan has no arrays");

  using D = device_t<T>;
  GroupedArguments<D> args{};
  fill_shared_arguments(args, pattern, q, k, v, bias, dims, layouts, scale);
  args.groups = groups.groups;
  args.group_offsets = groups.group_offsets;
  args.group_rows = groups.group_rows;
  args.out = to_device(out);
  args.lse = lse;
  // The SIMT kernel gathers key and value rows kVectorElements elements at a time.
  args.vectorized = rows_aligned_to(k, layouts.k, kVectorElements) && rows_aligned_to(v, layouts.v, kVectorElements) &&
                    dims.head_dim % kVectorElements == 0 && dims.value_dim % kVectorElements == 0;
  args.step_count = groups.steps == nullptr ? 0 : groups.step_count;
  args.steps = groups.steps;
  // float16 and bfloat16 on tensor cores where they apply.
  if (attention_forward_mma(args, stream)) return;
  // Head dims past what one warp holds per row, or a device without the shared memory: the generic kernel.
  if (dims.head_dim > max_grouped_attention_dim || dims.value_dim > max_grouped_attention_dim) {
    return attention_forward(pattern, q, k, v, bias, dims, layouts, scale, out, lse, stream);
  }
  const SharedLayout layout = shared_layout(static_cast<int>(dims.head_dim), static_cast<int>(dims.value_dim));
  const index_t shared_bytes = static_cast<index_t>(layout.total) * static_cast<index_t>(sizeof(float));
  int device = 0, shared_limit = 0;
  SPATTN_CUDA_CHECK(cudaGetDevice(&device));
  SPATTN_CUDA_CHECK(cudaDeviceGetAttribute(&shared_limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  if (shared_bytes > shared_limit) {
    return attention_forward(pattern, q, k, v, bias, dims, layouts, scale, out, lse, stream);
  }
  if (dims.value_dim <= 32) return launch_grouped<1>(args, shared_bytes, stream);
  if (dims.value_dim <= 64) return launch_grouped<2>(args, shared_bytes, stream);
  return launch_grouped<4>(args, shared_bytes, stream);
}

#define SPATTN_INSTANTIATE(T)                                                                                  \
  template void attention_forward_grouped<T>(CsrView, GroupsView, const T*, const T*, const T*, const T*,       \
                                             AttentionDims, const AttentionLayouts&, double, T*, accumulate_t<T>*, \
                                             cudaStream_t);
SPATTN_INSTANTIATE(float)
SPATTN_INSTANTIATE(float16)
SPATTN_INSTANTIATE(bfloat16)
#undef SPATTN_INSTANTIATE

}  // namespace spattn::cuda

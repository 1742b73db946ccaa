#pragma once
// Pieces shared by the fused attention kernels: how a row of q / k / v is spread over a group of lanes,
// and the choice of group shape for a head dim.
//
// A group of kLanes lanes handles one (problem, row); lane j holds elements [j * kElems, (j + 1) * kElems)
// of each dense row it touches, as floats in registers. The fast paths (head_dim == value_dim ==
// kLanes * kElems, rows aligned to the vector) load each lane's slice with one vector load; the generic path
// loads element by element and pads with zeros past the row's end.

#include <cstdint>
#include <type_traits>

#include "device_types.cuh"
#include "spattn/cuda_kernels.hpp"

namespace spattn::cuda::detail {

template <int kLanesValue, int kElemsValue, bool kVectorizedValue>
struct FragmentShape {
  static constexpr int kLanes = kLanesValue;
  static constexpr int kElems = kElemsValue;
  static constexpr bool kVectorized = kVectorizedValue;
  static_assert(32 % kLanes == 0, "a group must tile a warp");
};

template <typename D, int kElems>
struct alignas(sizeof(D) * kElems) Packed {
  D values[kElems];
};

template <typename Shape, typename D>
__device__ __forceinline__ void load_fragment(const D* __restrict__ row, index_t dim, int lane,
                                              float (&fragment)[Shape::kElems]) {
  const index_t first = static_cast<index_t>(lane) * Shape::kElems;
  if constexpr (Shape::kVectorized) {
    const Packed<D, Shape::kElems> packed = *reinterpret_cast<const Packed<D, Shape::kElems>*>(row + first);
#pragma unroll
    for (int i = 0; i < Shape::kElems; ++i) fragment[i] = to_float(packed.values[i]);
  } else {
#pragma unroll
    for (int i = 0; i < Shape::kElems; ++i) fragment[i] = first + i < dim ? to_float(row[first + i]) : 0.f;
  }
}

template <typename Shape, typename D>
__device__ __forceinline__ void store_fragment(D* __restrict__ row, index_t dim, int lane,
                                               const float (&fragment)[Shape::kElems], float factor) {
  const index_t first = static_cast<index_t>(lane) * Shape::kElems;
  if constexpr (Shape::kVectorized) {
    Packed<D, Shape::kElems> packed;
#pragma unroll
    for (int i = 0; i < Shape::kElems; ++i) packed.values[i] = from_float<D>(fragment[i] * factor);
    *reinterpret_cast<Packed<D, Shape::kElems>*>(row + first) = packed;
  } else {
#pragma unroll
    for (int i = 0; i < Shape::kElems; ++i) {
      if (first + i < dim) row[first + i] = from_float<D>(fragment[i] * factor);
    }
  }
}

template <int kElems>
__device__ __forceinline__ void zero_fragment(float (&fragment)[kElems]) {
#pragma unroll
  for (int i = 0; i < kElems; ++i) fragment[i] = 0.f;
}

// This lane's share of a . b (padding lanes hold zeros); group_sum completes it.
template <int kElems>
__device__ __forceinline__ float partial_dot(const float (&a)[kElems], const float (&b)[kElems]) {
  float sum = 0.f;
#pragma unroll
  for (int i = 0; i < kElems; ++i) sum = fmaf(a[i], b[i], sum);
  return sum;
}

// Entries handled per step of a row loop: several keys' loads in flight at once, fewer for wide rows so the
// fragments stay in registers.
template <typename Shape>
constexpr int entries_per_step() {
  return Shape::kElems <= 4 ? 4 : Shape::kElems <= 8 ? 2 : 1;
}

// The keys and values of entries [step, step + kStep) of a row whose entries end at `end`, all loads issued
// before the first use; entries past the end load as zeros (the callers give them no weight). Key and value
// rows are k_row_stride and v_row_stride elements apart.
template <typename Shape, int kStep, typename D>
__device__ __forceinline__ void load_step_keys_and_values(const index_t* __restrict__ col_indices, index_t step,
                                                          index_t end, const D* __restrict__ k_problem,
                                                          index_t k_row_stride, index_t head_dim,
                                                          const D* __restrict__ v_problem, index_t v_row_stride,
                                                          index_t value_dim, int lane,
                                                          float (&key)[kStep][Shape::kElems],
                                                          float (&value)[kStep][Shape::kElems]) {
#pragma unroll
  for (int u = 0; u < kStep; ++u) {
    const index_t entry = step + u;
    if (entry < end) {
      const index_t column = col_indices[entry];
      load_fragment<Shape>(k_problem + column * k_row_stride, head_dim, lane, key[u]);
      load_fragment<Shape>(v_problem + column * v_row_stride, value_dim, lane, value[u]);
    } else {
      zero_fragment(key[u]);
      zero_fragment(value[u]);
    }
  }
}

// One group of the execution plan (spattn/plan.hpp) as the grouped kernels walk it: its rows and the column
// list they share (the first row's).
struct PlanGroup {
  index_t size;
  const index_t* rows;
  const index_t* columns;
  index_t column_count;
};
__device__ __forceinline__ PlanGroup plan_group(const index_t* __restrict__ row_offsets,
                                                const index_t* __restrict__ col_indices,
                                                const index_t* __restrict__ group_offsets,
                                                const index_t* __restrict__ group_rows, index_t group) {
  const index_t begin = group_offsets[group];
  const index_t first_row = group_rows[begin];
  return {group_offsets[group + 1] - begin, group_rows + begin, col_indices + row_offsets[first_row],
          row_offsets[first_row + 1] - row_offsets[first_row]};
}

inline bool aligned_16(const void* pointer) { return reinterpret_cast<std::uintptr_t>(pointer) % 16 == 0; }

// Host side, for operands read through an OperandLayout (spattn/kernels.hpp). Whether every row of every
// problem starts on a multiple of `elements` elements (what a vector load of that many elements needs): the
// base pointer and the batch, head and row strides all aligned.
template <typename D>
inline bool rows_aligned_to(const D* base, const OperandLayout& layout, index_t elements) {
  const std::uintptr_t bytes = static_cast<std::uintptr_t>(elements) * sizeof(D);
  return reinterpret_cast<std::uintptr_t>(base) % bytes == 0 && layout.batch_stride % elements == 0 &&
         layout.head_stride % elements == 0 && layout.row_stride % elements == 0;
}

// Calls launch(FragmentShape<...>{}) with the shape for these dims; `aligned`: every dense row the kernel
// touches starts on a multiple of 4 elements (needed by the fast paths' vector loads and stores).
template <typename Launch>
void dispatch_fragment_shape(index_t head_dim, index_t value_dim, bool aligned, Launch&& launch) {
  SPATTN_CHECK(head_dim >= 0 && value_dim >= 0 && head_dim <= max_attention_dim && value_dim <= max_attention_dim,
               "head_dim and value_dim must be at most ", max_attention_dim, " for the CUDA attention kernels, got ",
               head_dim, " and ", value_dim);
  if (aligned && head_dim == value_dim) {
    // Fast paths: one 4-element vector per lane; narrow heads use fewer lanes per row, more rows per warp.
    if (head_dim == 32) return launch(FragmentShape<8, 4, true>{});
    if (head_dim == 64) return launch(FragmentShape<16, 4, true>{});
    if (head_dim == 128) return launch(FragmentShape<32, 4, true>{});
  }
  const index_t widest = head_dim > value_dim ? head_dim : value_dim;
  if (widest <= 64) return launch(FragmentShape<32, 2, false>{});
  if (widest <= 128) return launch(FragmentShape<32, 4, false>{});
  if (widest <= 256) return launch(FragmentShape<32, 8, false>{});
  return launch(FragmentShape<32, 32, false>{});
}

}  // namespace spattn::cuda::detail

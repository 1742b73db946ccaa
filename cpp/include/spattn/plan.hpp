#pragma once
// The execution plan of a pattern: rows that share an identical column list form a group. A group is a
// small dense attention problem (every row of a Swin window attends to the same keys), so a kernel can
// gather the group's keys and values once and reuse them for all of its rows.

#include <vector>

#include "spattn/csr.hpp"

namespace spattn {

// Every row of the pattern is in exactly one group: group_rows is a permutation of [0, rows). The rows of
// group g are group_rows[group_offsets[g] .. group_offsets[g + 1]), in increasing order; the group's
// columns are the column list of its first row. Groups are ordered by their first row. Rows without
// entries form one group of their own (with 0 columns), so that a kernel walking the groups writes every
// row's output.
//
// The plan also carries the schedule of the CUDA tensor-core kernels, built here once so that no kernel call
// pays for it. A step is what one thread block of kStepWarps warps computes at once: up to kStepWarps warp
// tasks of kWarpRows consecutive rows of one group (in group_rows order). A group of at most kStepRows rows
// lies in one step; longer groups are split into chunks of kStepRows rows, a step each. Small groups share a
// step (a shifted Swin window's regions of 9 to 28 rows) while their warps fit and their key tiles, each
// padded to a multiple of kWarpRows keys, fit kStepKeys keys; a group with more than kStepKeys columns takes
// a step of its own and is streamed kStepKeys keys at a time. Steps follow group order; the warps of one
// task are consecutive.
//   steps[(s * kStepWarps + w) * 2 + 0]  the group of warp w of step s, -1 for an idle warp
//   steps[(s * kStepWarps + w) * 2 + 1]  the warp's first row, counted within its group's rows
// A column is owned by a group when all of its entries lie in that group and the group has at most
// kStepRows rows: the tensor-core backward then completes the column's dK and dV within one step.
// unowned_columns lists every other column (entries in several groups, in a longer group, or none) in
// increasing order; a backward needs a pass over columns only when it is not empty.
inline constexpr index_t kStepWarps = 4;
inline constexpr index_t kWarpRows = 16;
inline constexpr index_t kStepRows = kStepWarps * kWarpRows;
inline constexpr index_t kStepKeys = 64;

struct ExecutionPlan {
  std::vector<index_t> group_offsets{0};  // groups + 1 entries
  std::vector<index_t> group_rows;        // rows entries
  std::vector<index_t> steps;             // step_count() * kStepWarps * 2 entries
  std::vector<index_t> unowned_columns;

  index_t groups() const { return static_cast<index_t>(group_offsets.size()) - 1; }
  index_t step_count() const { return static_cast<index_t>(steps.size()) / (kStepWarps * 2); }
};

// A borrowed plan for kernels (device memory for the CUDA ones). The schedule is optional: without it
// (steps == nullptr) the CUDA kernels that need it are not used.
struct GroupsView {
  index_t groups = 0;
  const index_t* group_offsets = nullptr;
  const index_t* group_rows = nullptr;
  index_t step_count = 0;
  const index_t* steps = nullptr;
  index_t unowned_column_count = 0;
  const index_t* unowned_columns = nullptr;
};

// Groups the rows of a well-formed pattern (spattn::validate) in O(nnz) expected time: each row's column
// list is hashed, and rows with equal hashes are compared entry by entry before they join a group.
ExecutionPlan build_plan(CsrView pattern);

}  // namespace spattn

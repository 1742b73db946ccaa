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
struct ExecutionPlan {
  std::vector<index_t> group_offsets{0};  // groups + 1 entries
  std::vector<index_t> group_rows;        // rows entries

  index_t groups() const { return static_cast<index_t>(group_offsets.size()) - 1; }
};

// A borrowed plan for kernels (device memory for the CUDA ones).
struct GroupsView {
  index_t groups = 0;
  const index_t* group_offsets = nullptr;
  const index_t* group_rows = nullptr;
};

// Groups the rows of a well-formed pattern (spattn::validate) in O(nnz) expected time: each row's column
// list is hashed, and rows with equal hashes are compared entry by entry before they join a group.
ExecutionPlan build_plan(CsrView pattern);

}  // namespace spattn

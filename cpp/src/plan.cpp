// Grouping rows by identical column lists (see spattn/plan.hpp).

#include "spattn/plan.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <unordered_map>

#include "spattn/error.hpp"

namespace spattn {
namespace {

// FNV-1a style mixing of the length and every column: equal lists hash equally; collisions are resolved
// by comparing the lists.
std::uint64_t hash_columns(const index_t* columns, index_t length) {
  std::uint64_t hash = 1469598103934665603ull ^ static_cast<std::uint64_t>(length);
  for (index_t i = 0; i < length; ++i) {
    hash ^= static_cast<std::uint64_t>(columns[i]) + 0x9e3779b97f4a7c15ull + (hash << 6) + (hash >> 2);
    hash *= 1099511628211ull;
  }
  return hash;
}

bool same_columns(CsrView pattern, index_t a, index_t b) {
  const index_t length = pattern.row_length(a);
  if (pattern.row_length(b) != length) return false;
  if (length == 0) return true;
  return std::memcmp(pattern.col_indices + pattern.row_offsets[a], pattern.col_indices + pattern.row_offsets[b],
                     static_cast<std::size_t>(length) * sizeof(index_t)) == 0;
}

index_t round_up(index_t value, index_t multiple) { return (value + multiple - 1) / multiple * multiple; }

// Next-fit packing of the warp tasks into steps (see plan.hpp): tasks come in group order, each covering up
// to kStepRows consecutive rows of its group; a task joins the open step while the warps and padded keys
// fit and neither it nor the step holds a wide group (more than kStepKeys columns), which streams its keys
// and so needs the block to itself.
void schedule_steps(CsrView pattern, ExecutionPlan& plan) {
  index_t used_warps = kStepWarps;  // no open step yet: the first task opens one
  index_t used_keys = 0;
  bool open_wide = false;
  for (index_t g = 0; g < plan.groups(); ++g) {
    const index_t group_size = plan.group_offsets[g + 1] - plan.group_offsets[g];
    const index_t columns = pattern.row_length(plan.group_rows[plan.group_offsets[g]]);
    const bool wide = columns > kStepKeys;
    const index_t key_width = round_up(std::min(columns, kStepKeys), kWarpRows);
    for (index_t first_row = 0; first_row < group_size; first_row += kStepRows) {
      const index_t warps = (std::min(kStepRows, group_size - first_row) + kWarpRows - 1) / kWarpRows;
      if (used_warps + warps > kStepWarps || used_keys + key_width > kStepKeys || wide || open_wide) {
        for (index_t w = 0; w < kStepWarps; ++w) plan.steps.insert(plan.steps.end(), {-1, 0});  // idle warps
        used_warps = 0;
        used_keys = 0;
        open_wide = wide;
      }
      const std::size_t step_begin = plan.steps.size() - static_cast<std::size_t>(kStepWarps) * 2;
      for (index_t w = 0; w < warps; ++w) {
        const std::size_t slot = step_begin + static_cast<std::size_t>(used_warps + w) * 2;
        plan.steps[slot] = g;
        plan.steps[slot + 1] = first_row + w * kWarpRows;
      }
      used_warps += warps;
      used_keys += key_width;
    }
  }
}

// A column is owned when its entries all lie in one group of at most kStepRows rows. Rows of a group share
// their column list, so a column's entries lie in a single group exactly when its entry count equals the
// size of the group of any row holding it: one look at each group's first row decides, O(nnz) in all.
std::vector<index_t> unowned_columns(CsrView pattern, const ExecutionPlan& plan) {
  const std::size_t cols = static_cast<std::size_t>(pattern.cols);
  std::vector<index_t> count(cols, 0);
  for (index_t i = 0; i < pattern.nnz(); ++i) ++count[static_cast<std::size_t>(pattern.col_indices[i])];
  std::vector<char> owned(cols, 0);
  for (index_t g = 0; g < plan.groups(); ++g) {
    const index_t group_size = plan.group_offsets[g + 1] - plan.group_offsets[g];
    if (group_size > kStepRows) continue;
    const index_t row = plan.group_rows[plan.group_offsets[g]];
    for (index_t i = pattern.row_offsets[row]; i < pattern.row_offsets[row + 1]; ++i) {
      const index_t column = pattern.col_indices[i];
      if (count[static_cast<std::size_t>(column)] == group_size) owned[static_cast<std::size_t>(column)] = 1;
    }
  }
  std::vector<index_t> unowned;
  for (std::size_t j = 0; j < cols; ++j) {
    if (!owned[j]) unowned.push_back(static_cast<index_t>(j));
  }
  return unowned;
}

}  // namespace

ExecutionPlan build_plan(CsrView pattern) {
  SPATTN_CHECK(pattern.rows >= 0, "build_plan: rows must be non-negative, got ", pattern.rows);
  SPATTN_CHECK(pattern.cols >= 0, "build_plan: cols must be non-negative, got ", pattern.cols);
  ExecutionPlan plan;
  const index_t rows = pattern.rows;
  if (rows == 0) {
    plan.unowned_columns = unowned_columns(pattern, plan);  // every column: none has an entry
    return plan;
  }
  SPATTN_CHECK(pattern.row_offsets != nullptr && (pattern.col_indices != nullptr || pattern.nnz() == 0),
               "build_plan: the pattern has no arrays");

  // Pass 1: the group of each row. Groups are numbered in order of their first row; `candidates` maps a
  // hash to the groups with that hash (almost always one).
  std::vector<index_t> group_of_row(static_cast<std::size_t>(rows));
  std::vector<index_t> first_row_of_group;
  std::unordered_multimap<std::uint64_t, index_t> candidates;
  candidates.reserve(static_cast<std::size_t>(rows));
  for (index_t row = 0; row < rows; ++row) {
    const std::uint64_t hash = hash_columns(pattern.col_indices + pattern.row_offsets[row], pattern.row_length(row));
    index_t group = -1;
    const auto range = candidates.equal_range(hash);
    for (auto it = range.first; it != range.second; ++it) {
      if (same_columns(pattern, first_row_of_group[static_cast<std::size_t>(it->second)], row)) {
        group = it->second;
        break;
      }
    }
    if (group < 0) {
      group = static_cast<index_t>(first_row_of_group.size());
      first_row_of_group.push_back(row);
      candidates.emplace(hash, group);
    }
    group_of_row[static_cast<std::size_t>(row)] = group;
  }

  // Pass 2: a counting sort of the rows by group (stable, so rows stay increasing within a group).
  const index_t groups = static_cast<index_t>(first_row_of_group.size());
  plan.group_offsets.assign(static_cast<std::size_t>(groups) + 1, 0);
  for (index_t row = 0; row < rows; ++row) ++plan.group_offsets[static_cast<std::size_t>(group_of_row[row]) + 1];
  for (index_t g = 0; g < groups; ++g) plan.group_offsets[g + 1] += plan.group_offsets[g];
  std::vector<index_t> next(plan.group_offsets.begin(), plan.group_offsets.end() - 1);
  plan.group_rows.resize(static_cast<std::size_t>(rows));
  for (index_t row = 0; row < rows; ++row) {
    plan.group_rows[static_cast<std::size_t>(next[static_cast<std::size_t>(group_of_row[row])]++)] = row;
  }
  schedule_steps(pattern, plan);
  plan.unowned_columns = unowned_columns(pattern, plan);
  return plan;
}

}  // namespace spattn

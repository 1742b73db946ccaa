// Grouping rows by identical column lists (see spattn/plan.hpp).

#include "spattn/plan.hpp"

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

}  // namespace

ExecutionPlan build_plan(CsrView pattern) {
  SPATTN_CHECK(pattern.rows >= 0, "build_plan: rows must be non-negative, got ", pattern.rows);
  ExecutionPlan plan;
  const index_t rows = pattern.rows;
  if (rows == 0) return plan;
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
  return plan;
}

}  // namespace spattn

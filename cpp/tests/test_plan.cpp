// The execution plan: rows with identical column lists share a group, every row is in exactly one group;
// the steps of the tensor-core kernels cover every row once; the unowned columns are exactly those whose
// entries do not all lie in one group of at most kStepRows rows.

#include <algorithm>
#include <cstdint>
#include <set>
#include <vector>

#include "check.hpp"
#include "spattn/plan.hpp"
#include "spattn/spattn.hpp"

using spattn::Csr;
using spattn::ExecutionPlan;
using spattn::index_t;

namespace {

std::vector<index_t> columns_of(const Csr& csr, index_t row) {
  return {csr.col_indices().begin() + csr.row_offsets()[row], csr.col_indices().begin() + csr.row_offsets()[row + 1]};
}

// The plan's invariants against a brute-force comparison of every pair of rows.
void check_plan(const Csr& csr, const ExecutionPlan& plan) {
  const index_t rows = csr.rows();
  CHECK(plan.group_offsets.size() == static_cast<std::size_t>(plan.groups()) + 1);
  CHECK(plan.group_offsets.front() == 0 && plan.group_offsets.back() == rows);
  CHECK(static_cast<index_t>(plan.group_rows.size()) == rows);
  std::vector<index_t> group_of(static_cast<std::size_t>(rows), -1);
  for (index_t g = 0; g < plan.groups(); ++g) {
    CHECK(plan.group_offsets[g + 1] > plan.group_offsets[g]);  // no empty groups
    for (index_t i = plan.group_offsets[g]; i < plan.group_offsets[g + 1]; ++i) {
      const index_t row = plan.group_rows[i];
      CHECK(row >= 0 && row < rows);
      if (row < 0 || row >= rows) return;
      CHECK(group_of[row] == -1);  // each row once
      group_of[row] = g;
      if (i > plan.group_offsets[g]) CHECK(plan.group_rows[i - 1] < row);  // increasing within a group
    }
    if (g > 0) CHECK(plan.group_rows[plan.group_offsets[g - 1]] < plan.group_rows[plan.group_offsets[g]]);
  }
  for (index_t a = 0; a < rows; ++a) {
    CHECK(group_of[a] >= 0);
    for (index_t b = a + 1; b < rows; ++b) {
      CHECK((columns_of(csr, a) == columns_of(csr, b)) == (group_of[a] == group_of[b]));
    }
  }
}

index_t group_size(const ExecutionPlan& plan, index_t g) { return plan.group_offsets[g + 1] - plan.group_offsets[g]; }

index_t group_columns(const Csr& csr, const ExecutionPlan& plan, index_t g) {
  const index_t row = plan.group_rows[plan.group_offsets[g]];
  return csr.row_offsets()[row + 1] - csr.row_offsets()[row];
}

index_t step_group(const ExecutionPlan& plan, index_t step, index_t warp) {
  return plan.steps[(step * spattn::kStepWarps + warp) * 2];
}

index_t step_row(const ExecutionPlan& plan, index_t step, index_t warp) {
  return plan.steps[(step * spattn::kStepWarps + warp) * 2 + 1];
}

// The distinct groups of a step, in warp order.
std::vector<index_t> step_groups(const ExecutionPlan& plan, index_t step) {
  std::vector<index_t> groups;
  for (index_t w = 0; w < spattn::kStepWarps; ++w) {
    const index_t g = step_group(plan, step, w);
    if (g >= 0 && (groups.empty() || groups.back() != g)) groups.push_back(g);
  }
  return groups;
}

// Columns whose entries are not all in one group of at most kStepRows rows, by looking at every entry.
std::vector<index_t> brute_force_unowned(const Csr& csr, const ExecutionPlan& plan) {
  std::vector<index_t> group_of(static_cast<std::size_t>(csr.rows()));
  for (index_t g = 0; g < plan.groups(); ++g) {
    for (index_t i = plan.group_offsets[g]; i < plan.group_offsets[g + 1]; ++i) group_of[plan.group_rows[i]] = g;
  }
  std::vector<std::set<index_t>> groups_of_column(static_cast<std::size_t>(csr.cols()));
  for (index_t row = 0; row < csr.rows(); ++row) {
    for (const index_t column : columns_of(csr, row)) groups_of_column[column].insert(group_of[row]);
  }
  std::vector<index_t> unowned;
  for (index_t column = 0; column < csr.cols(); ++column) {
    const auto& groups = groups_of_column[column];
    if (groups.size() != 1 || group_size(plan, *groups.begin()) > spattn::kStepRows) unowned.push_back(column);
  }
  return unowned;
}

// The schedule's invariants: every (group, row) covered exactly once, at most kStepKeys padded keys per step,
// a task's warps consecutive and starting at a multiple of kStepRows, wide groups alone, group order.
void check_schedule(const Csr& csr, const ExecutionPlan& plan) {
  using spattn::kStepKeys;
  using spattn::kStepRows;
  using spattn::kStepWarps;
  using spattn::kWarpRows;
  CHECK(static_cast<index_t>(plan.steps.size()) == plan.step_count() * kStepWarps * 2);
  std::vector<std::vector<int>> covered(static_cast<std::size_t>(plan.groups()));
  for (index_t g = 0; g < plan.groups(); ++g) covered[g].assign(static_cast<std::size_t>(group_size(plan, g)), 0);
  index_t previous_group = -1;
  for (index_t s = 0; s < plan.step_count(); ++s) {
    CHECK(step_group(plan, s, 0) >= 0);  // no empty step
    bool idle_seen = false;
    for (index_t w = 0; w < kStepWarps; ++w) {
      const index_t g = step_group(plan, s, w);
      const index_t first = step_row(plan, s, w);
      if (g < 0) {
        CHECK(g == -1 && first == 0);
        idle_seen = true;
        continue;
      }
      CHECK(!idle_seen);  // idle warps only at the end
      CHECK(g < plan.groups() && g >= previous_group);
      if (g >= plan.groups() || g < previous_group) return;
      previous_group = g;
      CHECK(first >= 0 && first < group_size(plan, g) && first % kWarpRows == 0);
      if (w > 0 && step_group(plan, s, w - 1) == g) {
        CHECK(first == step_row(plan, s, w - 1) + kWarpRows && first % kStepRows != 0);
      } else {
        CHECK(first % kStepRows == 0);  // a task starts at a chunk of kStepRows rows
      }
      for (index_t r = first; r < std::min(first + kWarpRows, group_size(plan, g)); ++r) ++covered[g][r];
    }
    index_t keys = 0;
    const std::vector<index_t> groups = step_groups(plan, s);
    for (const index_t g : groups) {
      const index_t columns = group_columns(csr, plan, g);
      if (columns > kStepKeys) CHECK(groups.size() == 1);  // a wide group is alone
      keys += (std::min(columns, kStepKeys) + kWarpRows - 1) / kWarpRows * kWarpRows;
    }
    CHECK(keys <= kStepKeys);
  }
  for (const auto& rows : covered) {
    for (const int count : rows) CHECK(count == 1);
  }
  CHECK(plan.unowned_columns == brute_force_unowned(csr, plan));
}

}  // namespace

TEST(swin_windows_are_groups) {
  const Csr csr = spattn::patterns::swin(8, 8, 4, 4, 0, 0);
  const ExecutionPlan plan = spattn::build_plan(csr.view());
  CHECK(plan.groups() == 4);
  for (index_t g = 0; g < plan.groups(); ++g) CHECK(plan.group_offsets[g + 1] - plan.group_offsets[g] == 16);
  check_plan(csr, plan);
}

TEST(shifted_swin_regions_are_groups) {
  const Csr csr = spattn::patterns::swin(8, 8, 4, 4, 2, 2);
  const ExecutionPlan plan = spattn::build_plan(csr.view());
  CHECK(plan.groups() > 4 && plan.groups() < 64);
  check_plan(csr, plan);
}

TEST(irregular_rows_and_empty_rows) {
  // Rows 0, 2, 5 share {1, 3}; rows 1 and 4 are empty; row 3 is alone; row 6 is a prefix of row 0's list.
  const std::vector<index_t> offsets{0, 2, 2, 4, 7, 7, 9, 10};
  const std::vector<index_t> columns{1, 3, 1, 3, 0, 2, 4, 1, 3, 1};
  const Csr csr(7, 5, offsets, columns);
  const ExecutionPlan plan = spattn::build_plan(csr.view());
  CHECK(plan.groups() == 4);
  CHECK((plan.group_rows == std::vector<index_t>{0, 2, 5, 1, 4, 3, 6}));
  CHECK((plan.group_offsets == std::vector<index_t>{0, 3, 5, 6, 7}));
  check_plan(csr, plan);
}

TEST(random_patterns) {
  for (unsigned seed = 0; seed < 5; ++seed) {
    const Csr csr = spattn::patterns::random(40, 6, 0.3, seed);  // few columns: many repeated lists
    check_plan(csr, spattn::build_plan(csr.view()));
  }
}

TEST(no_rows_and_no_entries) {
  const Csr none(0, 3, {0}, {});
  const ExecutionPlan empty = spattn::build_plan(none.view());
  CHECK(empty.groups() == 0 && empty.group_rows.empty() && empty.group_offsets == std::vector<index_t>{0});
  const Csr zeros(4, 3, {0, 0, 0, 0, 0}, {});
  const ExecutionPlan one = spattn::build_plan(zeros.view());
  CHECK(one.groups() == 1 && (one.group_rows == std::vector<index_t>{0, 1, 2, 3}));
  check_plan(zeros, one);
}

TEST(swin_schedule_one_window_per_step) {
  const Csr csr = spattn::patterns::swin(56, 56, 7, 0);
  const ExecutionPlan plan = spattn::build_plan(csr.view());
  CHECK(plan.groups() == 64 && plan.step_count() == 64);
  for (index_t s = 0; s < plan.step_count(); ++s) {
    for (index_t w = 0; w < spattn::kStepWarps; ++w) {
      CHECK(step_group(plan, s, w) == s && step_row(plan, s, w) == 16 * w);
    }
  }
  CHECK(plan.unowned_columns.empty());
  check_plan(csr, plan);
  check_schedule(csr, plan);
}

TEST(shifted_swin_schedule_shares_steps) {
  // Regions of 49 rows (inner windows), 28 and 21 (last window column and row), 16, 12, 12 and 9 (the corner).
  const Csr csr = spattn::patterns::swin(56, 56, 7, 3);
  const ExecutionPlan plan = spattn::build_plan(csr.view());
  std::multiset<index_t> sizes;
  for (index_t g = 0; g < plan.groups(); ++g) sizes.insert(group_size(plan, g));
  CHECK(plan.groups() == 81 && sizes.count(49) == 49 && sizes.count(28) == 14 && sizes.count(21) == 14);
  CHECK(sizes.count(16) == 1 && sizes.count(12) == 2 && sizes.count(9) == 1);
  // In group (first row) order: the wrapped strip along the top (9, then seven 21-row regions, then 12) packs
  // as 9 + 21, 21 + 21 three times, 12 + 21; each following window row has seven windows of a step each and
  // its 28 + 21 regions together; the bottom strip is 28 + 12, 28 + 28 three times and 28 + 16.
  CHECK(plan.step_count() == 5 + 7 * 8 + 4);
  index_t shared = 0;
  for (index_t s = 0; s < plan.step_count(); ++s) {
    const std::vector<index_t> groups = step_groups(plan, s);
    if (groups.size() > 1) ++shared;
    for (const index_t g : groups) {
      if (group_size(plan, g) < 49) CHECK(groups.size() == 2);  // every small region shares its step
    }
  }
  CHECK(shared == 5 + 7 + 4);
  const std::vector<index_t> first = step_groups(plan, 0);
  CHECK(first.size() == 2 && group_size(plan, first[0]) == 9 && group_size(plan, first[1]) == 21);
  CHECK(step_group(plan, 0, 3) == -1);  // 9 + 21 + 21 rows would need 5 warps
  const std::vector<index_t> last = step_groups(plan, plan.step_count() - 1);
  CHECK(last.size() == 2 && group_size(plan, last[0]) == 28 && group_size(plan, last[1]) == 16);
  CHECK(plan.unowned_columns.empty());
  check_plan(csr, plan);
  check_schedule(csr, plan);
}

TEST(long_group_takes_two_steps) {
  std::vector<index_t> offsets{0};
  std::vector<index_t> columns;
  for (index_t row = 0; row < 100; ++row) {
    for (index_t column = 0; column < 10; ++column) columns.push_back(column);
    offsets.push_back(static_cast<index_t>(columns.size()));
  }
  const Csr csr(100, 12, offsets, columns);
  const ExecutionPlan plan = spattn::build_plan(csr.view());
  CHECK(plan.groups() == 1 && plan.step_count() == 2);
  CHECK((plan.steps == std::vector<index_t>{0, 0, 0, 16, 0, 32, 0, 48, 0, 64, 0, 80, 0, 96, -1, 0}));
  std::vector<index_t> all(12);
  for (index_t column = 0; column < 12; ++column) all[column] = column;
  CHECK(plan.unowned_columns == all);  // a group longer than one step owns no column
  check_schedule(csr, plan);
}

TEST(wide_group_takes_a_step_of_its_own) {
  // Rows 0-3 attend to 100 columns, rows 4-5 are empty: the empty rows' task (1 warp, 0 keys) would fit
  // beside the wide group's, but a wide group streams its keys and keeps the block to itself.
  std::vector<index_t> offsets{0};
  std::vector<index_t> columns;
  for (index_t row = 0; row < 6; ++row) {
    for (index_t column = 0; row < 4 && column < 100; ++column) columns.push_back(column);
    offsets.push_back(static_cast<index_t>(columns.size()));
  }
  const Csr csr(6, 102, offsets, columns);
  const ExecutionPlan plan = spattn::build_plan(csr.view());
  CHECK(plan.groups() == 2 && plan.step_count() == 2);
  CHECK((plan.steps == std::vector<index_t>{0, 0, -1, 0, -1, 0, -1, 0, 1, 0, -1, 0, -1, 0, -1, 0}));
  CHECK((plan.unowned_columns == std::vector<index_t>{100, 101}));  // the group owns the columns it has
  check_schedule(csr, plan);
}

TEST(empty_rows_share_a_step) {
  // Rows 0-1 attend to {0, 1}, rows 2-3 are empty, row 4 attends to {2}; column 3 has no entry.
  const Csr csr(5, 4, {0, 2, 4, 4, 4, 5}, {0, 1, 0, 1, 2});
  const ExecutionPlan plan = spattn::build_plan(csr.view());
  CHECK(plan.groups() == 3 && plan.step_count() == 1);
  CHECK((plan.steps == std::vector<index_t>{0, 0, 1, 0, 2, 0, -1, 0}));
  CHECK((plan.unowned_columns == std::vector<index_t>{3}));
  check_schedule(csr, plan);
  const Csr none(0, 3, {0}, {});
  const ExecutionPlan empty = spattn::build_plan(none.view());
  CHECK(empty.step_count() == 0 && (empty.unowned_columns == std::vector<index_t>{0, 1, 2}));
}

TEST(random_pattern_columns_shared_between_groups) {
  // Column 0 is in two groups (rows 0 and 1 differ), column 1 in one group of two rows, column 2 in one row.
  const Csr csr(3, 3, {0, 2, 3, 5}, {0, 1, 0, 0, 1});
  const ExecutionPlan plan = spattn::build_plan(csr.view());
  CHECK(plan.groups() == 2);
  CHECK((plan.unowned_columns == std::vector<index_t>{0, 2}));
  check_schedule(csr, plan);
  const Csr random = spattn::patterns::random(300, 200, 0.05, 7);
  const ExecutionPlan random_plan = spattn::build_plan(random.view());
  CHECK(!random_plan.unowned_columns.empty());
  check_schedule(random, random_plan);
}

TEST(schedule_properties_on_random_patterns) {
  // Patterns with groups of many sizes and widths: random row counts repeating random column lists, some
  // empty, some wider than a step, some longer than a step.
  std::uint64_t state = 12345;
  const auto next = [&state](index_t bound) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<index_t>((state >> 33) % static_cast<std::uint64_t>(bound));
  };
  for (int trial = 0; trial < 200; ++trial) {
    const index_t cols = 1 + next(150);
    std::vector<std::vector<index_t>> lists(static_cast<std::size_t>(1 + next(6)));
    for (auto& list : lists) {
      const int kind = static_cast<int>(next(4));
      const index_t density = kind == 0 ? 0 : kind == 1 ? 2 : kind == 2 ? 20 : 90;  // percent
      for (index_t column = 0; column < cols; ++column) {
        if (next(100) < density) list.push_back(column);
      }
    }
    std::vector<index_t> offsets{0};
    std::vector<index_t> columns;
    const index_t rows = next(200);
    for (index_t row = 0; row < rows; ++row) {
      const auto& list = lists[static_cast<std::size_t>(next(static_cast<index_t>(lists.size())))];
      columns.insert(columns.end(), list.begin(), list.end());
      offsets.push_back(static_cast<index_t>(columns.size()));
    }
    const Csr csr(rows, cols, offsets, columns);
    const ExecutionPlan plan = spattn::build_plan(csr.view());
    check_plan(csr, plan);
    check_schedule(csr, plan);
  }
  for (unsigned seed = 0; seed < 5; ++seed) {
    const Csr csr = spattn::patterns::random(90, 70, 0.02 + 0.1 * seed, seed);
    check_schedule(csr, spattn::build_plan(csr.view()));
  }
}

TEST_MAIN()

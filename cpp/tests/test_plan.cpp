// The execution plan: rows with identical column lists share a group, every row is in exactly one group.

#include <algorithm>
#include <set>

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

TEST_MAIN()

// The grouped (execution-plan) fused attention backward on the CPU against a float64 reference, on the
// shapes its dense path must get right: Swin windows, groups of exactly the minimum size, column lists that
// are not whole vectors, Dv != D, groups longer than one chunk of rows, columns shared between groups or
// with row-path rows, columns no row uses, fully masked rows inside a group, every bias mode. Also: every
// gradient element is written, results do not depend on scheduling, and NaNs spread as on the row path.

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "attention_reference.hpp"
#include "check.hpp"
#include "test_values.hpp"
#include "spattn/spattn.hpp"

using spattn::AttentionDims;
using spattn::bfloat16;
using spattn::Csr;
using spattn::index_t;
using spattn::testing::close;
using spattn::testing::convert;
using spattn::testing::from_double;
using spattn::testing::random_values;
using spattn::testing::to_double;

using spattn::testing::Inputs;
using spattn::testing::make_inputs;
using spattn::testing::Shape;

namespace {

constexpr double quiet_nan = std::numeric_limits<double>::quiet_NaN();

// The library's forward and backward in type T, the backward with the pattern's plan unless without_plan.
// Gradient buffers start as NaN, so an element the kernel does not write shows up.
template <typename T>
struct KernelRun {
  std::vector<T> grad_q, grad_k, grad_v, grad_bias;
};

template <typename T>
KernelRun<T> run_kernels(const Csr& pattern, const Inputs& in, double scale, bool without_plan = false) {
  using Acc = spattn::accumulate_t<T>;
  const AttentionDims& dims = in.dims;
  const index_t rows = pattern.rows();
  const spattn::Transposed transposed = spattn::transpose(pattern.view());
  const spattn::ExecutionPlan plan = spattn::build_plan(pattern.view());
  const spattn::GroupsView groups = without_plan ? spattn::GroupsView{}
                                                 : spattn::GroupsView{plan.groups(), plan.group_offsets.data(),
                                                                      plan.group_rows.data()};
  const auto layouts = spattn::AttentionLayouts::contiguous(pattern.view(), dims);
  const auto q = convert<T>(in.q), k = convert<T>(in.k), v = convert<T>(in.v), grad_out = convert<T>(in.grad_out);
  const auto bias = convert<T>(in.bias);
  const auto grad_lse = convert<Acc>(in.grad_lse);
  const T* bias_pointer = dims.bias_heads > 0 ? bias.data() : nullptr;
  std::vector<T> out(dims.batch * rows * dims.value_dim);
  std::vector<Acc> lse(dims.batch * rows);
  // The forward without the plan: this file tests the backward alone.
  spattn::cpu::attention_forward(pattern.view(), spattn::GroupsView{}, q.data(), k.data(), v.data(), bias_pointer,
                                 dims, layouts, scale, out.data(), lse.data());
  const T unwritten = from_double<T>(quiet_nan);
  KernelRun<T> run{std::vector<T>(q.size(), unwritten), std::vector<T>(k.size(), unwritten),
                   std::vector<T>(v.size(), unwritten), std::vector<T>(bias.size(), unwritten)};
  std::vector<Acc> workspace(spattn::cpu::attention_backward_workspace_size(pattern.view(), dims));
  spattn::cpu::attention_backward(pattern.view(), {transposed.pattern.view(), transposed.permutation.data()}, groups,
                                  q.data(), k.data(), v.data(), bias_pointer, out.data(), grad_out.data(), lse.data(),
                                  grad_lse.empty() ? nullptr : grad_lse.data(), dims, layouts, scale, run.grad_q.data(), run.grad_k.data(), run.grad_v.data(),
                                  dims.bias_heads > 0 ? run.grad_bias.data() : nullptr, workspace.data());
  return run;
}

template <typename T>
void check_against_reference(const Csr& pattern, const Shape& shape, unsigned seed, bool without_plan = false) {
  const Inputs inputs = make_inputs(pattern, shape, seed);
  const double scale = 1 / std::sqrt(static_cast<double>(shape.head_dim));
  const spattn::testing::Reference expected = spattn::testing::reference_attention(pattern, inputs, scale);
  const KernelRun<T> actual = run_kernels<T>(pattern, inputs, scale, without_plan);
  CHECK(close(actual.grad_q, expected.grad_q));
  CHECK(close(actual.grad_k, expected.grad_k));
  CHECK(close(actual.grad_v, expected.grad_v));
  if (shape.bias_heads > 0) CHECK(close(actual.grad_bias, expected.grad_bias));
}

void check_all_types(const Csr& pattern, const Shape& shape, unsigned seed, bool without_plan = false) {
  check_against_reference<float>(pattern, shape, seed, without_plan);
  check_against_reference<bfloat16>(pattern, shape, seed, without_plan);
  check_against_reference<double>(pattern, shape, seed, without_plan);
}

// Rows labelled `row_labels` attend to the columns with the same label (spattn::patterns::from_groups).
Csr labelled_groups(const std::vector<index_t>& row_labels, const std::vector<index_t>& col_labels) {
  return spattn::patterns::from_groups(row_labels.data(), static_cast<index_t>(row_labels.size()), col_labels.data(),
                                       static_cast<index_t>(col_labels.size()));
}

// A pattern that mixes everything the grouped kernel routes: six groups of six rows, each with seven
// columns of its own plus global column 0 (shared by every row); single rows that use columns 0, 3, 9 and
// 45 (so 3 and 9, in two groups' lists, are no longer owned by them); a group of 7 rows over 600 columns
// (longer than the dense path takes); 3 empty rows; and columns 43, 44 and 46..49 that no row uses.
Csr mixed_pattern() {
  std::vector<index_t> rows, cols;
  const auto add = [&](index_t row, index_t col) { rows.push_back(row), cols.push_back(col); };
  for (index_t group = 0; group < 6; ++group) {
    for (index_t r = 0; r < 6; ++r) {
      const index_t row = group * 6 + r;
      add(row, 0);
      for (index_t j = 0; j < 7; ++j) add(row, 1 + 7 * group + j);
    }
  }
  for (index_t r = 36; r < 40; ++r) {
    for (index_t col : {index_t{0}, index_t{3}, index_t{9}, index_t{45}}) add(r, col);
  }
  for (index_t r = 40; r < 47; ++r) {
    for (index_t col = 50; col < 650; ++col) add(r, col);
  }
  // rows 47..49: empty
  return Csr::from_coo(50, 700, rows.data(), cols.data(), static_cast<index_t>(rows.size()));
}

}  // namespace

TEST(swin_windows) {
  check_all_types(spattn::patterns::swin(14, 14, 7, 0), {2, 2, 32, 32, 2, -1}, 1);
  check_all_types(spattn::patterns::swin(14, 14, 7, 3), {2, 2, 32, 32, 1, 20}, 2);  // row 20: inside a group
  check_all_types(spattn::patterns::swin(12, 10, 4, 3, 2, 1), {1, 3, 16, 24, 3, 5}, 3);  // Dv != D
  check_all_types(spattn::patterns::swin(8, 8, 4, 2), {2, 1, 64, 64, 0, -1}, 4);
}

TEST(groups_of_the_minimum_size_and_short_column_lists) {
  // Rows 0..39 in groups of exactly 4, rows 40..48 in groups of 3 (the row path); 5 columns per label.
  std::vector<index_t> row_labels, col_labels;
  for (index_t r = 0; r < 49; ++r) row_labels.push_back(r < 40 ? r / 4 : 10 + (r - 40) / 3);
  for (index_t c = 0; c < 65; ++c) col_labels.push_back(c / 5);
  const Csr pattern = labelled_groups(row_labels, col_labels);
  check_all_types(pattern, {2, 2, 64, 64, 2, 2}, 5);
  check_all_types(pattern, {1, 2, 5, 3, 1, 41}, 6);     // odd dims
  check_all_types(pattern, {1, 1, 264, 8, 1, -1}, 14);  // a head dim above the dense path's: all rows row by row
}

TEST(groups_longer_than_a_chunk_of_rows) {
  // Two groups of 75 rows over 13 columns each, and one of 130 rows over 200.
  std::vector<index_t> row_labels, col_labels;
  for (index_t r = 0; r < 280; ++r) row_labels.push_back(r < 150 ? r / 75 : 2);
  for (index_t c = 0; c < 226; ++c) col_labels.push_back(c < 26 ? c / 13 : 2);
  const Csr pattern = labelled_groups(row_labels, col_labels);
  check_all_types(pattern, {1, 2, 32, 32, 2, 100}, 7);
  check_all_types(pattern, {1, 1, 8, 16, 0, -1}, 8);
}

TEST(shared_columns_row_path_rows_and_unused_columns) {
  const Csr pattern = mixed_pattern();
  check_all_types(pattern, {2, 2, 32, 32, 2, 8}, 9);
  check_all_types(pattern, {1, 3, 7, 9, 1, -1}, 10);
  check_all_types(pattern, {1, 2, 64, 64, 0, -1}, 11);
}

TEST(grouped_query_attention_and_lse_gradient) {
  // k and v with fewer heads (dK, dV summed over each k/v head's query heads on the dense path, the row path
  // and the column pass), a gradient reaching lse, and a per-problem [B, H, nnz] bias (bias_heads = batch).
  const Csr swin = spattn::patterns::swin(14, 14, 7, 3);
  check_all_types(swin, {2, 4, 32, 32, 0, -1, 2, true}, 21);
  check_all_types(swin, {1, 4, 16, 24, 8, 20, 4, true}, 22);  // MQA, per-problem bias, a masked row, Dv != D
  const Csr mixed = mixed_pattern();
  check_all_types(mixed, {2, 2, 32, 32, 2, 8, 2, true}, 23);
  check_all_types(mixed, {1, 3, 7, 9, 3, -1, 1, true}, 24);
  check_all_types(mixed, {2, 4, 5, 3, 8, 40, 2, false}, 25);  // odd dims, per-problem bias
  // The row-by-row kernel alone (no plan) in every type.
  check_all_types(swin, {2, 4, 32, 32, 8, 20, 4, true}, 26, true);
  check_all_types(mixed, {1, 4, 7, 9, 4, -1, 2, true}, 27, true);
}

TEST(results_do_not_depend_on_scheduling) {
  const Csr pattern = mixed_pattern();
  const Inputs inputs = make_inputs(pattern, {2, 2, 32, 32, 2, -1}, 12);
  const KernelRun<float> first = run_kernels<float>(pattern, inputs, 0.5);
  for (int repeat = 0; repeat < 3; ++repeat) {
    const KernelRun<float> again = run_kernels<float>(pattern, inputs, 0.5);
    const auto same_bits = [](const std::vector<float>& a, const std::vector<float>& b) {
      return a.size() == b.size() && std::memcmp(a.data(), b.data(), sizeof(float) * a.size()) == 0;
    };
    CHECK(same_bits(first.grad_q, again.grad_q));
    CHECK(same_bits(first.grad_k, again.grad_k));
    CHECK(same_bits(first.grad_v, again.grad_v));
    CHECK(same_bits(first.grad_bias, again.grad_bias));
  }
}

TEST(nan_spreads_as_on_the_row_path) {
  // A NaN in one key of a Swin window: the window's rows and every column they use turn NaN, nothing else.
  const Csr pattern = spattn::patterns::swin(14, 14, 7, 3);
  Inputs inputs = make_inputs(pattern, {1, 2, 32, 32, 2, -1}, 13);
  inputs.k[(1 * pattern.cols() + 60) * 32 + 5] = quiet_nan;  // problem 1, key 60
  const KernelRun<float> grouped = run_kernels<float>(pattern, inputs, 0.25);
  const KernelRun<float> row_by_row = run_kernels<float>(pattern, inputs, 0.25, true);
  const auto same_nans = [](const std::vector<float>& a, const std::vector<float>& b) {
    bool any = false;
    for (std::size_t i = 0; i < a.size(); ++i) {
      if (std::isnan(a[i]) != std::isnan(b[i])) return false;
      any |= std::isnan(a[i]);
    }
    return any;
  };
  CHECK(same_nans(grouped.grad_q, row_by_row.grad_q));
  CHECK(same_nans(grouped.grad_k, row_by_row.grad_k));
  CHECK(same_nans(grouped.grad_v, row_by_row.grad_v));
  CHECK(same_nans(grouped.grad_bias, row_by_row.grad_bias));
}

TEST_MAIN()

// The grouped forward kernel (execution plan) against the row-by-row kernel, which test_cpu_kernels checks
// against a float64 reference: the same outputs and log-sum-exps, on the shapes where the dense path and
// the row path meet (groups of exactly 4 rows, groups too wide for the dense path, column counts that are
// not whole vectors, value_dim != head_dim) and under the row path's special cases (NaN inputs, rows and
// entries masked to -infinity).

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "check.hpp"
#include "test_values.hpp"
#include "spattn/spattn.hpp"

using spattn::AttentionDims;
using spattn::bfloat16;
using spattn::Csr;
using spattn::ExecutionPlan;
using spattn::index_t;
using spattn::testing::convert;
using spattn::testing::random_values;
using spattn::testing::to_double;

namespace {

constexpr float negative_infinity = -std::numeric_limits<float>::infinity();

// `group_count` groups of `group_rows` rows, each attending to its own random `columns` of `cols`; rows of
// different groups interleave, as Swin's windows do in token order.
Csr grouped_pattern(index_t group_count, index_t group_rows, index_t columns, index_t cols, unsigned seed) {
  std::mt19937 engine(seed);
  const index_t rows = group_count * group_rows;
  std::vector<std::uint8_t> mask(static_cast<std::size_t>(rows * cols), 0);
  std::vector<index_t> order(static_cast<std::size_t>(cols));
  for (index_t g = 0; g < group_count; ++g) {
    for (index_t c = 0; c < cols; ++c) order[c] = c;
    std::shuffle(order.begin(), order.end(), engine);
    for (index_t i = 0; i < group_rows; ++i) {
      const index_t row = i * group_count + g;
      for (index_t c = 0; c < columns; ++c) mask[row * cols + order[c]] = 1;
    }
  }
  return Csr::from_dense(mask.data(), rows, cols);
}

struct Inputs {
  std::vector<double> q, k, v, bias;  // bias [heads, nnz]
};

template <typename T>
struct Result {
  std::vector<T> out;
  std::vector<spattn::accumulate_t<T>> lse;
};

// The forward over contiguous operands, with the plan or (with_plan = false) row by row.
template <typename T>
Result<T> forward(const Csr& pattern, const Inputs& inputs, AttentionDims dims, bool with_plan) {
  const ExecutionPlan plan = spattn::build_plan(pattern.view());
  const spattn::GroupsView groups =
      with_plan ? spattn::GroupsView{plan.groups(), plan.group_offsets.data(), plan.group_rows.data()}
                : spattn::GroupsView{};
  const auto q = convert<T>(inputs.q), k = convert<T>(inputs.k), v = convert<T>(inputs.v);
  const auto bias = convert<T>(inputs.bias);
  Result<T> result{std::vector<T>(static_cast<std::size_t>(dims.batch * pattern.rows() * dims.value_dim)),
                   std::vector<spattn::accumulate_t<T>>(static_cast<std::size_t>(dims.batch * pattern.rows()))};
  spattn::cpu::attention_forward(pattern.view(), groups, q.data(), k.data(), v.data(),
                                 dims.bias_heads > 0 ? bias.data() : nullptr, dims,
                                 spattn::AttentionLayouts::contiguous(pattern.view(), dims),
                                 1 / std::sqrt(static_cast<double>(dims.head_dim)), result.out.data(),
                                 result.lse.data());
  return result;
}

// Equal within `tolerance` of the largest magnitude; NaN where the other has NaN, equal infinities.
template <typename T>
bool same_values(const std::vector<T>& actual, const std::vector<T>& expected, double tolerance) {
  double scale = 1;
  for (const T& value : expected) {
    if (std::isfinite(to_double(value))) scale = std::max(scale, std::abs(to_double(value)));
  }
  for (std::size_t i = 0; i < actual.size(); ++i) {
    const double a = to_double(actual[i]), e = to_double(expected[i]);
    if (std::isnan(e) ? std::isnan(a) : (std::isinf(e) ? a == e : std::abs(a - e) <= tolerance * scale)) continue;
    std::printf("  element %zu: got %.9g, expected %.9g\n", i, a, e);
    return false;
  }
  return true;
}

template <typename T>
double tolerance() {
  return std::is_same_v<T, bfloat16> ? 1e-2 : 1e-5;  // bfloat16: the stored outputs may round apart
}

// The grouped kernel against the row path on `pattern`; `edit` may change the inputs first.
template <typename T, typename Edit>
Result<T> check_against_rows(const Csr& pattern, index_t heads, index_t head_dim, index_t value_dim,
                             index_t bias_heads, unsigned seed, Edit edit) {
  const index_t batch = 2 * heads;
  const AttentionDims dims{batch, head_dim, value_dim, bias_heads, heads};
  Inputs inputs{random_values(batch * pattern.rows() * head_dim, seed),
                random_values(batch * pattern.cols() * head_dim, seed + 1),
                random_values(batch * pattern.cols() * value_dim, seed + 2),
                random_values(std::max<index_t>(bias_heads, 1) * pattern.nnz(), seed + 3)};
  edit(inputs);
  const Result<T> rows = forward<T>(pattern, inputs, dims, false);
  Result<T> grouped = forward<T>(pattern, inputs, dims, true);
  CHECK(same_values(grouped.out, rows.out, tolerance<T>()));
  CHECK(same_values(grouped.lse, rows.lse, 1e-5));
  return grouped;
}

template <typename T>
Result<T> check_against_rows(const Csr& pattern, index_t heads, index_t head_dim, index_t value_dim,
                             index_t bias_heads, unsigned seed) {
  return check_against_rows<T>(pattern, heads, head_dim, value_dim, bias_heads, seed, [](Inputs&) {});
}

template <typename T>
void check_shapes() {
  for (index_t shift : {0, 3}) {  // windows of 49 rows, and with a shift the partial regions of the border
    check_against_rows<T>(spattn::patterns::swin(14, 14, 7, shift), 3, 32, 32, 3, 60 + shift);
  }
  check_against_rows<T>(grouped_pattern(5, 4, 13, 40, 61), 2, 16, 24, 1, 62);   // 4 rows, 13 columns, Dv != D
  check_against_rows<T>(grouped_pattern(3, 9, 8, 20, 63), 1, 5, 7, 0, 64);      // odd dims, no bias
  check_against_rows<T>(grouped_pattern(3, 6, 3, 10, 65), 2, 64, 64, 2, 66);    // fewer columns than a vector
  check_against_rows<T>(grouped_pattern(2, 3, 30, 40, 67), 1, 32, 32, 1, 68);   // groups too small: row path
  check_against_rows<T>(grouped_pattern(2, 10, 700, 900, 69), 1, 32, 32, 1, 70);  // too wide: row path
  check_against_rows<T>(grouped_pattern(4, 37, 100, 130, 71), 2, 128, 128, 1, 72);  // chunks of a long group
}

}  // namespace

TEST(grouped_forward_matches_rows_float) { check_shapes<float>(); }
TEST(grouped_forward_matches_rows_bfloat16) { check_shapes<bfloat16>(); }
TEST(grouped_forward_matches_rows_double) {
  check_against_rows<double>(spattn::patterns::swin(14, 14, 7, 3), 2, 32, 32, 2, 73);
}

TEST(grouped_forward_masked_and_nan_rows) {
  // Groups of 4 rows over 12 columns (8 + a partial vector). Row 0 masked completely, row 1 partly (its
  // first 9 entries, across the vector boundary), row 2 reads a NaN query element.
  const Csr pattern = grouped_pattern(2, 4, 12, 16, 74);
  const index_t heads = 1, head_dim = 8;
  const auto edit = [&](Inputs& inputs) {
    const index_t first = pattern.row_offsets()[0], second = pattern.row_offsets()[1];
    for (index_t e = first; e < pattern.row_offsets()[1]; ++e) inputs.bias[e] = negative_infinity;
    for (index_t e = second; e < second + 9; ++e) inputs.bias[e] = negative_infinity;
    inputs.q[2 * head_dim + 3] = std::numeric_limits<float>::quiet_NaN();  // problem 0, row 2
  };
  const Result<float> result = check_against_rows<float>(pattern, heads, head_dim, head_dim, 1, 75, edit);
  const index_t rows = pattern.rows();
  for (index_t problem = 0; problem < 2; ++problem) {
    CHECK(result.lse[problem * rows] == negative_infinity);
    for (index_t d = 0; d < head_dim; ++d) CHECK(result.out[(problem * rows) * head_dim + d] == 0.0f);
    CHECK(std::isfinite(result.lse[problem * rows + 1]));
  }
  CHECK(std::isnan(result.lse[2]) && std::isnan(result.out[2 * head_dim]));
  CHECK(std::isfinite(result.lse[rows + 2]));  // the NaN is in problem 0 only
  check_against_rows<bfloat16>(pattern, heads, head_dim, head_dim, 1, 75, edit);
}

TEST_MAIN()

// The CPU kernels against a naive dense reference that accumulates in double, on small random patterns
// with empty rows and Nq != Nk, for float, double and bfloat16.

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <utility>

#include "check.hpp"
#include "test_values.hpp"
#include "spattn/spattn.hpp"

using spattn::AttentionDims;
using spattn::bfloat16;
using spattn::Csr;
using spattn::index_t;
using spattn::TransposedView;
using spattn::testing::close;
using spattn::testing::convert;
using spattn::testing::from_double;
using spattn::testing::random_values;
using spattn::testing::to_double;

namespace {

constexpr double negative_infinity = -std::numeric_limits<double>::infinity();

// ---- problems ------------------------------------------------------------------------------------------
struct Problem {
  Csr pattern;
  spattn::Transposed transposed;
  index_t batch;
  std::vector<index_t> row_of_entry;

  TransposedView transposed_view() const { return {transposed.pattern.view(), transposed.permutation.data()}; }
};

// The pattern with what the tests derive from it: its transpose and the row of each entry.
Problem problem_of(Csr pattern, index_t batch) {
  Problem problem{std::move(pattern), {}, batch, {}};
  problem.transposed = spattn::transpose(problem.pattern.view());
  for (index_t r = 0; r < problem.pattern.rows(); ++r) {
    for (index_t e = problem.pattern.row_offsets()[r]; e < problem.pattern.row_offsets()[r + 1]; ++e) {
      problem.row_of_entry.push_back(r);
    }
  }
  return problem;
}

// A random rows x cols pattern in which rows 0 and rows - 2 have no entries. With paired_rows, every odd row
// repeats the row before it (rows sharing their columns, like Swin's, take the fused kernel's paired path).
Problem make_problem(index_t rows, index_t cols, index_t batch, unsigned seed, bool paired_rows = false) {
  std::mt19937 engine(seed);
  std::bernoulli_distribution bit(0.4);
  std::vector<std::uint8_t> mask(rows * cols);
  for (index_t r = 0; r < rows; ++r) {
    for (index_t c = 0; c < cols; ++c) {
      mask[r * cols + c] = paired_rows && r % 2 == 1 ? mask[(r - 1) * cols + c]
                                                     : (r != 0 && r != rows - 2) && bit(engine);
    }
  }
  return problem_of(Csr::from_dense(mask.data(), rows, cols), batch);
}

// ---- dense double references ---------------------------------------------------------------------------
double dot(const double* x, const double* y, index_t n) {
  double sum = 0;
  for (index_t d = 0; d < n; ++d) sum += x[d] * y[d];
  return sum;
}

struct AttentionReference {
  std::vector<double> out, lse, grad_q, grad_k, grad_v, grad_bias;
};

// Dense attention per problem with -infinity for entries outside the pattern.
AttentionReference reference_attention(const Problem& problem, const std::vector<double>& q,
                                       const std::vector<double>& k, const std::vector<double>& v,
                                       const std::vector<double>* bias, const std::vector<double>& grad_out,
                                       AttentionDims dims, double scale) {
  const Csr& p = problem.pattern;
  const index_t rows = p.rows(), cols = p.cols(), nnz = p.nnz(), D = dims.head_dim, Dv = dims.value_dim;
  AttentionReference r;
  r.out.assign(dims.batch * rows * Dv, 0);
  r.lse.assign(dims.batch * rows, negative_infinity);
  r.grad_q.assign(dims.batch * rows * D, 0);
  r.grad_k.assign(dims.batch * cols * D, 0);
  r.grad_v.assign(dims.batch * cols * Dv, 0);
  r.grad_bias.assign(std::max<index_t>(dims.bias_heads, 1) * nnz, 0);
  for (index_t b = 0; b < dims.batch; ++b) {
    for (index_t row = 0; row < rows; ++row) {
      std::vector<double> scores(cols, negative_infinity);
      std::vector<index_t> entry_of(cols, -1);
      for (index_t e = p.row_offsets()[row]; e < p.row_offsets()[row + 1]; ++e) {
        const index_t c = p.col_indices()[e];
        entry_of[c] = e;
        scores[c] = scale * dot(&q[(b * rows + row) * D], &k[(b * cols + c) * D], D) +
                    (bias ? (*bias)[(b % dims.bias_heads) * nnz + e] : 0.0);
      }
      double maximum = negative_infinity;
      for (double s : scores) maximum = std::max(maximum, s);
      if (maximum == negative_infinity) continue;
      double sum = 0;
      for (double s : scores) sum += std::exp(s - maximum);
      r.lse[b * rows + row] = maximum + std::log(sum);
      std::vector<double> probability(cols), score_grad(cols);
      for (index_t c = 0; c < cols; ++c) probability[c] = std::exp(scores[c] - maximum) / sum;
      const double* dO = &grad_out[(b * rows + row) * Dv];
      double delta = 0;
      for (index_t c = 0; c < cols; ++c) {
        for (index_t d = 0; d < Dv; ++d) {
          r.out[(b * rows + row) * Dv + d] += probability[c] * v[(b * cols + c) * Dv + d];
        }
        delta += probability[c] * dot(dO, &v[(b * cols + c) * Dv], Dv);
      }
      for (index_t c = 0; c < cols; ++c) {
        score_grad[c] = probability[c] * (dot(dO, &v[(b * cols + c) * Dv], Dv) - delta);
        for (index_t d = 0; d < D; ++d) {
          r.grad_q[(b * rows + row) * D + d] += scale * score_grad[c] * k[(b * cols + c) * D + d];
          r.grad_k[(b * cols + c) * D + d] += scale * score_grad[c] * q[(b * rows + row) * D + d];
        }
        for (index_t d = 0; d < Dv; ++d) r.grad_v[(b * cols + c) * Dv + d] += probability[c] * dO[d];
        if (entry_of[c] >= 0 && dims.bias_heads > 0) {
          r.grad_bias[(b % dims.bias_heads) * nnz + entry_of[c]] += score_grad[c];
        }
      }
    }
  }
  return r;
}

// ---- tests per type ------------------------------------------------------------------------------------
template <typename T>
void check_sddmm(index_t dim, unsigned seed) {
  const Problem problem = make_problem(11, 7, 3, seed);
  const Csr& p = problem.pattern;
  const index_t rows = p.rows(), cols = p.cols(), nnz = p.nnz(), batch = problem.batch;
  const auto a = random_values(batch * rows * dim, seed + 1), b = random_values(batch * cols * dim, seed + 2);
  const auto grad = random_values(batch * nnz, seed + 3);
  std::vector<double> expected(batch * nnz), grad_a(batch * rows * dim, 0), grad_b(batch * cols * dim, 0);
  for (index_t n = 0; n < batch; ++n) {
    for (index_t e = 0; e < nnz; ++e) {
      const index_t r = problem.row_of_entry[e], c = p.col_indices()[e];
      expected[n * nnz + e] = dot(&a[(n * rows + r) * dim], &b[(n * cols + c) * dim], dim);
      for (index_t d = 0; d < dim; ++d) {
        grad_a[(n * rows + r) * dim + d] += grad[n * nnz + e] * b[(n * cols + c) * dim + d];
        grad_b[(n * cols + c) * dim + d] += grad[n * nnz + e] * a[(n * rows + r) * dim + d];
      }
    }
  }
  const auto a_t = convert<T>(a), b_t = convert<T>(b), grad_t = convert<T>(grad);
  std::vector<T> out(batch * nnz), grad_a_t(grad_a.size()), grad_b_t(grad_b.size());
  spattn::cpu::sddmm(p.view(), a_t.data(), b_t.data(), out.data(), batch, dim);
  CHECK(close(out, expected));
  spattn::cpu::sddmm_backward(p.view(), problem.transposed_view(), grad_t.data(), a_t.data(), b_t.data(),
                              grad_a_t.data(), grad_b_t.data(), batch, dim);
  CHECK(close(grad_a_t, grad_a));
  CHECK(close(grad_b_t, grad_b));
}

template <typename T>
void check_softmax(unsigned seed) {
  const Problem problem = make_problem(12, 9, 2, seed);
  const Csr& p = problem.pattern;
  const index_t rows = p.rows(), nnz = p.nnz(), batch = problem.batch;
  auto values = random_values(batch * nnz, seed + 1);
  // Row 1 of the first problem is masked out completely: it must give zeros, not NaN.
  for (index_t e = p.row_offsets()[1]; e < p.row_offsets()[2]; ++e) values[e] = negative_infinity;
  const auto grad = random_values(batch * nnz, seed + 2);
  std::vector<double> expected(batch * nnz, 0), expected_grad(batch * nnz, 0);
  for (index_t n = 0; n < batch; ++n) {
    for (index_t r = 0; r < rows; ++r) {
      const index_t begin = n * nnz + p.row_offsets()[r], end = n * nnz + p.row_offsets()[r + 1];
      double maximum = negative_infinity, sum = 0, weighted = 0;
      for (index_t e = begin; e < end; ++e) maximum = std::max(maximum, values[e]);
      if (maximum == negative_infinity) continue;
      for (index_t e = begin; e < end; ++e) sum += std::exp(values[e] - maximum);
      for (index_t e = begin; e < end; ++e) expected[e] = std::exp(values[e] - maximum) / sum;
      for (index_t e = begin; e < end; ++e) weighted += grad[e] * expected[e];
      for (index_t e = begin; e < end; ++e) expected_grad[e] = expected[e] * (grad[e] - weighted);
    }
  }
  const auto values_t = convert<T>(values), grad_t = convert<T>(grad);
  std::vector<T> out(batch * nnz), grad_values(batch * nnz);
  spattn::cpu::sparse_softmax(p.view(), values_t.data(), out.data(), batch);
  CHECK(close(out, expected));
  // The backward from the exact probabilities, so that its own error is what is measured.
  spattn::cpu::sparse_softmax_backward(p.view(), grad_t.data(), convert<T>(expected).data(), grad_values.data(), batch);
  CHECK(close(grad_values, expected_grad));
}

template <typename T>
void check_spmm(index_t dim, unsigned seed) {
  const Problem problem = make_problem(10, 13, 3, seed);
  const Csr& p = problem.pattern;
  const index_t rows = p.rows(), cols = p.cols(), nnz = p.nnz(), batch = problem.batch;
  const auto values = random_values(batch * nnz, seed + 1), b = random_values(batch * cols * dim, seed + 2);
  const auto grad_out = random_values(batch * rows * dim, seed + 3);
  std::vector<double> expected(batch * rows * dim, 0), grad_values(batch * nnz, 0), grad_b(batch * cols * dim, 0);
  for (index_t n = 0; n < batch; ++n) {
    for (index_t e = 0; e < nnz; ++e) {
      const index_t r = problem.row_of_entry[e], c = p.col_indices()[e];
      grad_values[n * nnz + e] = dot(&grad_out[(n * rows + r) * dim], &b[(n * cols + c) * dim], dim);
      for (index_t d = 0; d < dim; ++d) {
        expected[(n * rows + r) * dim + d] += values[n * nnz + e] * b[(n * cols + c) * dim + d];
        grad_b[(n * cols + c) * dim + d] += values[n * nnz + e] * grad_out[(n * rows + r) * dim + d];
      }
    }
  }
  const auto values_t = convert<T>(values), b_t = convert<T>(b), grad_out_t = convert<T>(grad_out);
  std::vector<T> out(expected.size()), grad_values_t(grad_values.size()), grad_b_t(grad_b.size());
  spattn::cpu::spmm(p.view(), values_t.data(), b_t.data(), out.data(), batch, dim);
  CHECK(close(out, expected));
  spattn::cpu::spmm_backward(p.view(), problem.transposed_view(), grad_out_t.data(), values_t.data(), b_t.data(),
                             grad_values_t.data(), grad_b_t.data(), batch, dim);
  CHECK(close(grad_values_t, grad_values));
  CHECK(close(grad_b_t, grad_b));
}

// ---- attention: every variant of the kernels against one reference ------------------------------------
// An operand [B, H, N, dim] stored as [B, N, H, dim + 3]: strided like q/k/v views of a fused projection,
// with 3 padding elements per row that hold NaN, so a kernel reading outside a row poisons its results
// and a kernel writing outside a row is caught by check_padding.
constexpr index_t row_padding = 3;

spattn::OperandLayout strided(index_t heads, index_t rows, index_t dim) {
  const index_t padded = dim + row_padding;
  return {rows * heads * padded, padded, heads * padded};
}

template <typename T>
std::vector<T> to_strided(const std::vector<T>& contiguous, index_t batch, index_t heads, index_t rows, index_t dim) {
  const index_t padded = dim + row_padding;
  std::vector<T> result(batch * rows * padded, from_double<T>(std::numeric_limits<double>::quiet_NaN()));
  for (index_t p = 0; p < batch; ++p) {
    for (index_t n = 0; n < rows; ++n) {
      const index_t b = p / heads, h = p % heads;
      std::copy_n(&contiguous[(p * rows + n) * dim], dim, &result[((b * rows + n) * heads + h) * padded]);
    }
  }
  return result;
}

template <typename T>
std::vector<T> from_strided(const std::vector<T>& strided_values, index_t batch, index_t heads, index_t rows,
                            index_t dim) {
  const index_t padded = dim + row_padding;
  std::vector<T> result(batch * rows * dim);
  for (index_t p = 0; p < batch; ++p) {
    for (index_t n = 0; n < rows; ++n) {
      const index_t b = p / heads, h = p % heads;
      std::copy_n(&strided_values[((b * rows + n) * heads + h) * padded], dim, &result[(p * rows + n) * dim]);
    }
  }
  return result;
}

// The padding elements of a strided output are untouched (still NaN).
template <typename T>
bool check_padding(const std::vector<T>& strided_values, index_t dim) {
  const index_t padded = dim + row_padding;
  for (std::size_t i = 0; i < strided_values.size(); ++i) {
    if (static_cast<index_t>(i % padded) >= dim && !std::isnan(to_double(strided_values[i]))) return false;
  }
  return true;
}

struct AttentionVariant {
  bool plan;
  bool strided;
};
constexpr AttentionVariant attention_variants[] = {{false, false}, {true, false}, {false, true}, {true, true}};

template <typename T>
void check_attention_problem(const Problem& problem, index_t heads, index_t head_dim, index_t value_dim,
                             index_t bias_heads, unsigned seed, bool mask_a_row) {
  using Acc = spattn::accumulate_t<T>;
  const Csr& p = problem.pattern;
  const index_t rows = p.rows(), cols = p.cols(), nnz = p.nnz(), batch = problem.batch;
  const AttentionDims dims{batch, head_dim, value_dim, bias_heads, heads};
  const double scale = 0.75;
  const auto q = random_values(batch * rows * head_dim, seed + 1), k = random_values(batch * cols * head_dim, seed + 2);
  const auto v = random_values(batch * cols * value_dim, seed + 3);
  const auto grad_out = random_values(batch * rows * value_dim, seed + 4);
  auto bias = random_values(std::max<index_t>(bias_heads, 1) * nnz, seed + 5);
  if (mask_a_row && rows > 3) {
    for (index_t e = p.row_offsets()[3]; e < p.row_offsets()[4]; ++e) bias[e] = negative_infinity;
  }
  const AttentionReference expected =
      reference_attention(problem, q, k, v, bias_heads > 0 ? &bias : nullptr, grad_out, dims, scale);
  const spattn::ExecutionPlan plan = spattn::build_plan(p.view());

  for (const AttentionVariant variant : attention_variants) {
    std::printf("  %s, %s operands\n", variant.plan ? "plan" : "no plan", variant.strided ? "strided" : "contiguous");
    const spattn::GroupsView groups =
        variant.plan ? spattn::GroupsView{plan.groups(), plan.group_offsets.data(), plan.group_rows.data()}
                     : spattn::GroupsView{};
    auto layouts = spattn::AttentionLayouts::contiguous(p.view(), dims);
    auto q_t = convert<T>(q), k_t = convert<T>(k), v_t = convert<T>(v), grad_out_t = convert<T>(grad_out);
    std::vector<T> out(batch * rows * value_dim);
    if (variant.strided) {
      layouts = {strided(heads, rows, head_dim), strided(heads, cols, head_dim), strided(heads, cols, value_dim),
                 strided(heads, rows, value_dim), strided(heads, rows, value_dim)};
      q_t = to_strided(q_t, batch, heads, rows, head_dim), k_t = to_strided(k_t, batch, heads, cols, head_dim);
      v_t = to_strided(v_t, batch, heads, cols, value_dim);
      grad_out_t = to_strided(grad_out_t, batch, heads, rows, value_dim);
      out = to_strided(out, batch, heads, rows, value_dim);
    }
    const auto bias_t = convert<T>(bias);
    const T* bias_pointer = bias_heads > 0 ? bias_t.data() : nullptr;
    std::vector<Acc> lse(batch * rows);
    spattn::cpu::attention_forward(p.view(), groups, q_t.data(), k_t.data(), v_t.data(), bias_pointer, dims, layouts,
                                   scale, out.data(), lse.data());
    if (variant.strided) {
      CHECK(check_padding(out, value_dim));
      CHECK(close(from_strided(out, batch, heads, rows, value_dim), expected.out));
    } else {
      CHECK(close(out, expected.out));
    }
    CHECK(close(lse, expected.lse));

    std::vector<T> grad_q(q.size()), grad_k(k.size()), grad_v(v.size()), grad_bias(bias.size());
    std::vector<Acc> workspace(spattn::cpu::attention_backward_workspace_size(p.view(), dims));
    spattn::cpu::attention_backward(p.view(), problem.transposed_view(), groups, q_t.data(), k_t.data(), v_t.data(),
                                    bias_pointer, out.data(), grad_out_t.data(), lse.data(), nullptr, dims, layouts, scale,
                                    grad_q.data(), grad_k.data(), grad_v.data(),
                                    bias_heads > 0 ? grad_bias.data() : nullptr, workspace.data());
    CHECK(close(grad_q, expected.grad_q));
    CHECK(close(grad_k, expected.grad_k));
    CHECK(close(grad_v, expected.grad_v));
    if (bias_heads > 0) CHECK(close(grad_bias, expected.grad_bias));
  }
}

template <typename T>
void check_attention(index_t head_dim, index_t value_dim, index_t bias_heads, unsigned seed, bool mask_a_row = false,
                     index_t rows_count = 14, index_t cols_count = 9, bool paired_rows = false) {
  const index_t heads = 2;
  const Problem problem = make_problem(rows_count, cols_count, 2 * heads, seed, paired_rows);
  check_attention_problem<T>(problem, heads, head_dim, value_dim, bias_heads, seed, mask_a_row);
}

// Rows in groups sharing their columns, as an execution plan sees them: `templates` column sets (one empty,
// some owning their columns outright like Swin's windows, some overlapping others), each row taking one
// of them, scattered over the rows, and a few rows with columns of their own.
Problem make_grouped_problem(index_t rows, index_t cols, index_t batch, unsigned seed, index_t templates = 6) {
  std::mt19937 engine(seed);
  std::vector<std::vector<std::uint8_t>> column_sets(static_cast<std::size_t>(templates),
                                                     std::vector<std::uint8_t>(cols, 0));
  const index_t owned = cols / 2;  // columns [0, owned) are split between the first templates, disjointly
  for (index_t c = 0; c < owned; ++c) column_sets[c % std::max<index_t>(templates / 2, 1)][c] = 1;
  std::bernoulli_distribution bit(0.5);
  for (index_t t = templates / 2; t + 1 < templates; ++t) {
    for (index_t c = owned; c < cols; ++c) column_sets[t][c] = bit(engine);
  }
  // column_sets.back() stays empty: rows without entries as a group.
  std::uniform_int_distribution<index_t> pick(0, templates - 1);
  std::bernoulli_distribution own_columns(0.1), dense_bit(0.3);
  std::vector<std::uint8_t> mask(rows * cols);
  for (index_t r = 0; r < rows; ++r) {
    if (own_columns(engine)) {
      for (index_t c = owned; c < cols; ++c) mask[r * cols + c] = dense_bit(engine);
    } else {
      const auto& set = column_sets[pick(engine)];
      std::copy(set.begin(), set.end(), mask.begin() + r * cols);
    }
  }
  return problem_of(Csr::from_dense(mask.data(), rows, cols), batch);
}

template <typename T>
void check_grouped_attention(index_t rows, index_t cols, index_t heads, index_t head_dim, index_t value_dim,
                             index_t bias_heads, unsigned seed, bool mask_a_row = false) {
  const Problem problem = make_grouped_problem(rows, cols, 2 * heads, seed);
  check_attention_problem<T>(problem, heads, head_dim, value_dim, bias_heads, seed, mask_a_row);
}

template <typename T>
void check_all_kernels() {
  for (index_t dim : {1, 3, 8, 33}) {
    check_sddmm<T>(dim, 10 + static_cast<unsigned>(dim));
    check_spmm<T>(dim, 20 + static_cast<unsigned>(dim));
  }
  check_softmax<T>(5);
  check_attention<T>(4, 4, 0, 31);
  check_attention<T>(7, 3, 1, 32);      // value_dim != head_dim, one shared bias
  check_attention<T>(33, 17, 2, 33);    // a bias per head
  check_attention<T>(1, 1, 2, 34);
  check_attention<T>(5, 6, 2, 35, true);  // a row masked out completely through the bias
  check_attention<T>(32, 32, 2, 36);        // head dims with a compile-time copy of the fused kernels
  check_attention<T>(64, 64, 1, 37, true);
  for (index_t dim : {3, 32, 64}) {  // rows sharing their columns, one of a pair masked out (row 3)
    check_attention<T>(dim, dim, 2, 38 + static_cast<unsigned>(dim), true, 14, 9, true);
    check_attention<T>(dim, dim, 0, 39 + static_cast<unsigned>(dim), false, 11, 150, true);
  }
  // Groups of rows sharing their columns (the execution plan's dense path), with odd sizes, Nq != Nk, long
  // groups, and every head dim the kernels specialise plus odd ones.
  check_grouped_attention<T>(120, 70, 2, 32, 32, 2, 50);
  check_grouped_attention<T>(97, 131, 3, 64, 64, 1, 51, true);
  check_grouped_attention<T>(61, 23, 1, 5, 7, 1, 52);
  check_grouped_attention<T>(200, 90, 2, 33, 33, 0, 53);
  check_grouped_attention<T>(40, 300, 2, 16, 16, 2, 54);
  check_grouped_attention<T>(33, 9, 2, 1, 1, 2, 55, true);
  check_grouped_attention<T>(150, 200, 1, 128, 128, 1, 56);
}

}  // namespace

TEST(cpu_kernels_double) { check_all_kernels<double>(); }
TEST(cpu_kernels_float) { check_all_kernels<float>(); }
TEST(cpu_kernels_bfloat16) { check_all_kernels<bfloat16>(); }

TEST(attention_rows_longer_than_one_block) {
  // 150 entries per row: the online softmax rescales across blocks of 64.
  check_attention<double>(3, 2, 1, 40, false, 6, 400);
  check_attention<float>(3, 2, 2, 41, true, 6, 400);
}

TEST(workspace_size_refuses_overflow) {
  const Problem problem = make_problem(4, 4, 1, 50);
  const AttentionDims dims{index_t{1} << 62, 1, 1, 0};
  CHECK_THROWS(spattn::cpu::attention_backward_workspace_size(problem.pattern.view(), dims), "too large");
}

TEST_MAIN()

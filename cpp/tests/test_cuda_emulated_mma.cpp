// The tensor-core kernels of the execution plan (cuda/attention_*_mma_kernel.cuh), run on the CPU through
// cuda_emulation.hpp, against the float64 reference, in float16 and bfloat16: Swin windows (shifted, so
// groups of 49, 28, 21, 16, 12 and 9 rows), random patterns with empty rows and Nq != Nk (groups of one row,
// columns shared between groups), groups wider than one tile of columns and longer than one chunk of rows,
// head dims that are not multiples of 16 (or of 8: the element-wise loads), every bias mode, rows the bias
// masks entirely, several chunks of problems per bias head and bias heads without problems.
//
// Checked: out and lse of every row; delta, dQ and the bias gradient's partial sums of every row and entry;
// dK and dV of every column a group owns, and that the other columns are left untouched (the column pass
// of attention_backward.cu computes them, tested on a GPU).

#include "cuda_emulation.hpp"  // first: it prepares the kernels' headers for the host compiler

#include "attention_backward_mma_kernel.cuh"
#include "attention_forward_mma_kernel.cuh"
#include "attention_reference.hpp"
#include "check.hpp"

#include <algorithm>
#include <functional>

using spattn::Csr;
using spattn::index_t;
using spattn::testing::Inputs;
using spattn::testing::make_inputs;
using spattn::testing::negative_infinity;
using spattn::testing::Reference;
using spattn::testing::Shape;
namespace kernels = spattn::cuda::detail;

namespace {

constexpr unsigned kBlocks = 3;  // fewer blocks than work items: the kernels' grid-stride loops run
constexpr double quiet_nan = std::numeric_limits<double>::quiet_NaN();

template <typename D>
D to_storage(double x) {
  if constexpr (std::is_same_v<D, __half>) {
    return __float2half_rn(static_cast<float>(x));
  } else {
    return __float2bfloat16_rn(static_cast<float>(x));
  }
}
double to_double(__half x) { return __half2float(x); }
double to_double(__nv_bfloat16 x) { return __bfloat162float(x); }
double to_double(float x) { return x; }

template <typename D>
std::vector<D> to_storage(const std::vector<double>& values) {
  std::vector<D> result;
  for (double x : values) result.push_back(to_storage<D>(x));
  return result;
}
template <typename X>
std::vector<double> to_doubles(const std::vector<X>& values) {
  std::vector<double> result;
  for (X x : values) result.push_back(to_double(x));
  return result;
}

template <typename D>
double tolerance() {
  return std::is_same_v<D, __half> ? 1e-2 : 3e-2;
}

// Relative to the largest finite expected magnitude (at least 1); -inf must be matched exactly. `name`
// and the first mismatch are printed.
bool close(const std::vector<double>& actual, const std::vector<double>& expected, double tolerance,
           const char* name) {
  if (actual.size() != expected.size()) return false;
  double scale = 1;
  for (double value : expected) {
    if (std::isfinite(value)) scale = std::max(scale, std::abs(value));
  }
  for (std::size_t i = 0; i < actual.size(); ++i) {
    const double a = actual[i], e = expected[i];
    if (std::isinf(e) ? a == e : std::abs(a - e) <= tolerance * scale) continue;
    std::printf("  %s, element %zu: got %.8g, expected %.8g\n", name, i, a, e);
    return false;
  }
  return true;
}

struct Problem {
  Csr pattern;
  spattn::ExecutionPlan plan;
  Shape shape;
  Inputs inputs;
  Reference expected;
  double scale;
};

Problem make_problem(Csr pattern, const Shape& shape, unsigned seed) {
  Problem problem{std::move(pattern), {}, shape, {}, {}, 0};
  problem.plan = spattn::build_plan(problem.pattern.view());
  problem.inputs = make_inputs(problem.pattern, shape, seed);
  problem.scale = 1 / std::sqrt(static_cast<double>(std::max<index_t>(shape.head_dim, 1)));
  problem.expected = spattn::testing::reference_attention(problem.pattern, problem.inputs, problem.scale);
  return problem;
}

// Whether the tensor-core backward owns column c (cuda/mma_tiles.cuh), from the host's pattern and plan.
std::vector<bool> owned_columns(const Problem& problem) {
  const Csr& pattern = problem.pattern;
  const spattn::Transposed transposed = spattn::transpose(pattern.view());
  std::vector<index_t> group_of_row(pattern.rows());
  for (index_t g = 0; g < problem.plan.groups(); ++g) {
    for (index_t i = problem.plan.group_offsets[g]; i < problem.plan.group_offsets[g + 1]; ++i) {
      group_of_row[problem.plan.group_rows[i]] = g;
    }
  }
  std::vector<bool> owned(pattern.cols(), false);
  for (index_t c = 0; c < pattern.cols(); ++c) {
    const index_t begin = transposed.pattern.row_offsets()[c], end = transposed.pattern.row_offsets()[c + 1];
    if (end == begin) continue;
    const index_t group = group_of_row[transposed.pattern.col_indices()[begin]];
    owned[c] = kernels::column_owned_by_group(
        end - begin, problem.plan.group_offsets[group + 1] - problem.plan.group_offsets[group]);
  }
  return owned;
}

// The storage-type inputs of a problem; `vectorized` = false forces the element-wise loads.
template <typename D>
struct DeviceInputs {
  std::vector<D> q, k, v, bias, grad_out;
  const D* bias_pointer() const { return bias.empty() ? nullptr : bias.data(); }
};
template <typename D>
DeviceInputs<D> device_inputs(const Problem& problem) {
  const Inputs& in = problem.inputs;
  DeviceInputs<D> result{to_storage<D>(in.q), to_storage<D>(in.k), to_storage<D>(in.v), {}, to_storage<D>(in.grad_out)};
  if (in.dims.bias_heads > 0) result.bias = to_storage<D>(in.bias);
  return result;
}

// The loads the launchers would choose for these dims (the test's arrays are 16-byte aligned); `allowed` =
// false forces the element-wise loads.
kernels::VectorLoads vector_loads(const spattn::AttentionDims& dims, bool allowed) {
  const bool q_and_k = allowed && dims.head_dim % 8 == 0, v_and_grad_out = allowed && dims.value_dim % 8 == 0;
  return {q_and_k, q_and_k, v_and_grad_out, v_and_grad_out};
}

template <typename D>
void check_forward(const Problem& problem, bool vectorized) {
  const Csr& pattern = problem.pattern;
  const spattn::AttentionDims& dims = problem.inputs.dims;
  const DeviceInputs<D> in = device_inputs<D>(problem);
  std::vector<D> out(dims.batch * pattern.rows() * dims.value_dim, to_storage<D>(quiet_nan));
  std::vector<float> lse(dims.batch * pattern.rows(), std::numeric_limits<float>::quiet_NaN());
  const kernels::GroupedArguments<D> args{pattern.rows(),
                                          pattern.cols(),
                                          dims.batch,
                                          dims.head_dim,
                                          dims.value_dim,
                                          dims.bias_heads,
                                          problem.plan.groups(),
                                          pattern.row_offsets().data(),
                                          pattern.col_indices().data(),
                                          problem.plan.group_offsets.data(),
                                          problem.plan.group_rows.data(),
                                          in.q.data(),
                                          in.k.data(),
                                          in.v.data(),
                                          in.bias_pointer(),
                                          out.data(),
                                          lse.data(),
                                          static_cast<float>(problem.scale),
                                          false};
  const int shared_bytes = kernels::forward_tiles(static_cast<int>(dims.head_dim), static_cast<int>(dims.value_dim),
                                                  sizeof(D)).bytes;
  spattn_emulation::launch(kernels::attention_forward_mma_kernel<D>, kBlocks, kernels::kMmaThreads, shared_bytes, args,
                           vector_loads(dims, vectorized));
  CHECK(close(to_doubles(out), problem.expected.out, tolerance<D>(), "out"));
  CHECK(close(to_doubles(lse), problem.expected.lse, 1e-4, "lse"));
}

template <typename D>
void check_backward(const Problem& problem, bool vectorized) {
  const Csr& pattern = problem.pattern;
  const spattn::AttentionDims& dims = problem.inputs.dims;
  const index_t rows = pattern.rows(), cols = pattern.cols(), nnz = pattern.nnz();
  const spattn::Transposed transposed = spattn::transpose(pattern.view());
  const DeviceInputs<D> in = device_inputs<D>(problem);
  // The forward's results, rounded as the forward kernel leaves them.
  const std::vector<D> out = to_storage<D>(problem.expected.out);
  std::vector<float> lse;
  for (double x : problem.expected.lse) lse.push_back(static_cast<float>(x));

  const D unwritten = to_storage<D>(quiet_nan);
  std::vector<D> grad_q(in.q.size(), unwritten), grad_k(in.k.size(), unwritten), grad_v(in.v.size(), unwritten);
  std::vector<float> delta(dims.batch * rows, std::numeric_limits<float>::quiet_NaN());
  const bool with_bias = dims.bias_heads > 0;
  const index_t chunks = kernels::bias_chunks(dims.batch, dims.bias_heads);
  std::vector<float> bias_partial(with_bias ? chunks * dims.bias_heads * nnz : 0,
                                  std::numeric_limits<float>::quiet_NaN());
  // The tensor-core kernel only tests grad_bias for null: the chunks' slices are summed below.
  std::vector<D> grad_bias(with_bias ? dims.bias_heads * nnz : 0);
  const kernels::BackwardArguments<D> args{rows,
                                           cols,
                                           dims.batch,
                                           dims.head_dim,
                                           dims.value_dim,
                                           dims.bias_heads,
                                           pattern.row_offsets().data(),
                                           pattern.col_indices().data(),
                                           transposed.pattern.row_offsets().data(),
                                           transposed.pattern.col_indices().data(),
                                           transposed.permutation.data(),
                                           in.q.data(),
                                           in.k.data(),
                                           in.v.data(),
                                           in.bias_pointer(),
                                           out.data(),
                                           in.grad_out.data(),
                                           lse.data(),
                                           grad_q.data(),
                                           grad_k.data(),
                                           grad_v.data(),
                                           with_bias ? grad_bias.data() : nullptr,
                                           delta.data(),
                                           bias_partial.data(),
                                           chunks,
                                           static_cast<float>(problem.scale),
                                           problem.plan.groups(),
                                           problem.plan.group_offsets.data(),
                                           problem.plan.group_rows.data(),
                                           nullptr};
  const int shared_bytes = kernels::backward_tiles(static_cast<int>(dims.head_dim),
                                                   static_cast<int>(dims.value_dim), sizeof(D)).bytes;
  spattn_emulation::launch(kernels::attention_backward_mma_kernel<D>, kBlocks, kernels::kMmaThreads, shared_bytes,
                           args, vector_loads(dims, vectorized));

  const Reference& expected = problem.expected;
  // delta from the rounded out: compare loosely, it only feeds dS.
  CHECK(close(to_doubles(delta), expected.delta, tolerance<D>(), "delta"));
  CHECK(close(to_doubles(grad_q), expected.grad_q, tolerance<D>(), "grad_q"));
  // Owned columns against the reference; the others untouched (NaN as they started).
  const std::vector<bool> owned = owned_columns(problem);
  const auto split = [&](const std::vector<D>& grad, const std::vector<double>& reference, index_t dim,
                         const char* name) {
    std::vector<double> actual_owned, expected_owned;
    bool others_untouched = true;
    for (index_t p = 0; p < dims.batch; ++p) {
      for (index_t c = 0; c < cols; ++c) {
        for (index_t d = 0; d < dim; ++d) {
          const index_t i = (p * cols + c) * dim + d;
          if (owned[c]) {
            actual_owned.push_back(to_double(grad[i]));
            expected_owned.push_back(reference[i]);
          } else {
            others_untouched &= std::isnan(to_double(grad[i]));
          }
        }
      }
    }
    CHECK(close(actual_owned, expected_owned, tolerance<D>(), name));
    CHECK(others_untouched);
  };
  split(grad_k, expected.grad_k, dims.head_dim, "grad_k");
  split(grad_v, expected.grad_v, dims.value_dim, "grad_v");
  if (with_bias) {
    // attention_backward.cu's last pass: the chunks' slices added in order.
    const index_t slice = dims.bias_heads * nnz;
    std::vector<double> grad_bias(slice, 0);
    for (index_t chunk = 0; chunk < chunks; ++chunk) {
      for (index_t i = 0; i < slice; ++i) grad_bias[i] += bias_partial[chunk * slice + i];
    }
    CHECK(close(grad_bias, expected.grad_bias, tolerance<D>(), "grad_bias"));
  }
}

template <typename D>
void check_both(const Problem& problem, bool vectorized = true) {
  check_forward<D>(problem, vectorized);
  check_backward<D>(problem, vectorized);
}

// ---- patterns ------------------------------------------------------------------------------------------
Csr from_mask(index_t rows, index_t cols, const std::function<bool(index_t, index_t)>& keep) {
  std::vector<std::uint8_t> mask(rows * cols);
  for (index_t r = 0; r < rows; ++r) {
    for (index_t c = 0; c < cols; ++c) mask[r * cols + c] = keep(r, c) ? 1 : 0;
  }
  return Csr::from_dense(mask.data(), rows, cols);
}

// Groups wider than one tile (30 rows x 150 columns: 3 tiles; 10 rows x 65 columns: a last tile of one
// column), a group of 70 rows (two chunks: its columns are not owned), rows of a random pattern, empty rows.
Csr wide_and_long_groups() {
  const Csr random = spattn::patterns::random(10, 160, 0.3, 5);
  std::vector<std::uint8_t> random_mask(10 * 160, 0);
  for (index_t r = 0; r < 10; ++r) {
    for (index_t e = random.row_offsets()[r]; e < random.row_offsets()[r + 1]; ++e) {
      random_mask[r * 160 + random.col_indices()[e]] = 1;
    }
  }
  return from_mask(120, 160, [&](index_t r, index_t c) {
    if (r < 30) return c < 150;
    if (r < 40) return c >= 10 && c < 140 && c % 2 == 0;
    if (r < 110) return c >= 150;
    if (r == 115 || r == 119) return false;
    return random_mask[(r - 110) * 160 + c] != 0;
  });
}

}  // namespace

TEST(swin_shifted_windows_float16_and_bfloat16) {
  Shape shape;
  shape.images = 2, shape.heads = 2, shape.bias_heads = 2;
  const Problem problem = make_problem(spattn::patterns::swin(14, 14, 7, 3), shape, 1);
  CHECK(owned_columns(problem) == std::vector<bool>(problem.pattern.cols(), true));  // every key owned
  check_both<__half>(problem);
  check_both<__nv_bfloat16>(problem);
}

TEST(small_windows_without_bias_and_with_a_shared_bias) {
  Shape shape;
  shape.images = 1, shape.heads = 3;
  check_both<__nv_bfloat16>(make_problem(spattn::patterns::swin(8, 8, 4, 2), shape, 2));
  shape.bias_heads = 1;
  check_both<__half>(make_problem(spattn::patterns::swin(8, 8, 4, 2), shape, 3));
}

TEST(random_pattern_with_empty_rows_and_fewer_queries_than_keys) {
  Csr random = spattn::patterns::random(37, 53, 0.4, 7);
  // Row 1 and 20 empty, row 5 masked by the bias.
  const Csr pattern = from_mask(37, 53, [&](index_t r, index_t c) {
    if (r == 1 || r == 20) return false;
    const auto begin = random.col_indices().begin() + random.row_offsets()[r];
    const auto end = random.col_indices().begin() + random.row_offsets()[r + 1];
    return std::find(begin, end, c) != end;
  });
  Shape shape;
  shape.images = 2, shape.heads = 2, shape.bias_heads = 2, shape.masked_row = 5;
  check_both<__nv_bfloat16>(make_problem(pattern, shape, 4));
}

TEST(groups_wider_than_a_tile_and_longer_than_a_chunk) {
  Shape shape;
  shape.images = 1, shape.heads = 2, shape.bias_heads = 2;
  check_both<__half>(make_problem(wide_and_long_groups(), shape, 5));
}

TEST(head_dims_not_multiples_of_16_and_element_wise_loads) {
  Shape shape;
  shape.images = 1, shape.heads = 2, shape.head_dim = 24, shape.value_dim = 40, shape.bias_heads = 2;
  const Csr pattern = spattn::patterns::swin(8, 8, 4, 2);
  check_both<__nv_bfloat16>(make_problem(pattern, shape, 6));
  shape.head_dim = 17, shape.value_dim = 9;  // not multiples of 8: element by element
  check_both<__half>(make_problem(pattern, shape, 7));
  shape.head_dim = shape.value_dim = 32;
  check_both<__half>(make_problem(pattern, shape, 8), /*vectorized=*/false);
}

TEST(wide_heads) {
  Shape shape;
  shape.images = 1, shape.heads = 1, shape.head_dim = 128, shape.value_dim = 64, shape.bias_heads = 1;
  check_both<__nv_bfloat16>(make_problem(spattn::patterns::swin(8, 8, 4, 2), shape, 9));
}

TEST(bias_gradient_over_several_chunks_of_problems_and_unused_heads) {
  Shape shape;
  shape.images = 9, shape.heads = 1, shape.bias_heads = 1;  // 9 problems on one head: 3 chunks, the last partial
  check_backward<__half>(make_problem(spattn::patterns::swin(8, 8, 4, 2), shape, 10), true);
  shape.images = 1, shape.heads = 2, shape.bias_heads = 2;
  Problem problem = make_problem(spattn::patterns::swin(8, 8, 4, 2), shape, 11);
  // 2 problems, 3 bias heads: no problem reads head 2, whose slice must hold zeros (and its gradient be 0).
  problem.inputs.dims.bias_heads = 3;
  problem.inputs.bias.resize(3 * problem.pattern.nnz(), 0.5);
  problem.expected = spattn::testing::reference_attention(problem.pattern, problem.inputs, problem.scale);
  check_backward<__nv_bfloat16>(problem, true);
}

TEST_MAIN()

// The register-resident tensor-core forward (cuda/attention_forward_flash_kernel.cuh) run on the CPU through
// cuda_emulation.hpp and the emulated warp primitives of cuda/warp_primitives.cuh (mma.sync, ldmatrix and
// cp.async lane by lane, after the PTX ISA's fragment layouts), against the float64 reference, in float16 and
// bfloat16. The schedule is build_plan's; the grids are smaller than the work items, so each block walks
// several (step, problem) items, changes step, and reuses both stages of its ring.
//
// Covered: Swin stage windows (groups of 49 rows, one per step), shifted windows (groups of 9 to 49 rows,
// several sharing a step), random patterns with empty rows and Nq != Nk (groups of one row), a group longer
// than one step and groups wider than one key tile (online rescaling, a first tile without a finite score),
// head dims 17 to 128 with value_dim != head_dim, cp.async and element-wise gathers, paired and single stores,
// NaN in a query row (that row's out and lse NaN, the others exact), bias [1, nnz] and [H, nnz] with -inf
// entries masking whole rows or whole key tiles, a [B, H, nnz] bias (one per problem), no bias, q/k/v as
// strided views of one [B, N, 3, H, D] projection with out written in [B, N, H, Dv] order, out rows with gaps
// the kernel must not touch, grouped-query attention (2 and 4 query heads per k/v head, MQA; contiguous and
// views of one [B, N, H + 2 Hkv, D] projection), and grids of 1 block, 2 or 3 blocks, and more blocks than
// items.
//
// Checked: out and lse of every row of every problem, and that nothing else in out's buffer is written.
// Mutations (a swapped A-fragment register in mma, a missing cp.async wait, k/v heads or bias heads addressed
// with the wrong grouping) must make the comparison fail;
// the hooks for them live in the tests' flash_emulation.hpp (a storage type whose mma swaps two registers, and
// a switch in its specialisation of the kernel's wait), so the kernel runs unmodified.

#include "cuda_emulation.hpp"  // first: it prepares the kernels' headers for the host compiler

#include "attention_forward_flash_kernel.cuh"
#include "check.hpp"
#include "flash_emulation.hpp"  // after the kernel: its mutation hooks specialise the kernel's primitives

#include <algorithm>
#include <functional>
#include <limits>

using namespace flash_emulation;

namespace {

// ---- problems ----------------------------------------------------------------------------------------------
// The reference of `pattern` with the kernels' contract (and the other CUDA kernels') for a NaN query: a
// non-empty row with a NaN query element expects out and lse NaN.
Problem make_problem(Csr pattern, const Shape& shape, unsigned seed, const Edit& edit = {}) {
  Problem problem = make_reference_problem(std::move(pattern), shape, seed, edit);
  const index_t rows = problem.pattern.rows(), value_dim = problem.inputs.dims.value_dim;
  for_each_nan_query_row(problem, [&](index_t p, index_t r) {
    problem.expected.lse[p * rows + r] = std::numeric_limits<double>::quiet_NaN();
    for (index_t d = 0; d < value_dim; ++d) {
      problem.expected.out[(p * rows + r) * value_dim + d] = std::numeric_limits<double>::quiet_NaN();
    }
  });
  return problem;
}

// An edit: bias entries [first, last) of `row` (counted within the row) become -inf in every bias head.
void mask_bias(const Csr& pattern, Inputs& in, index_t row, index_t first, index_t last) {
  const index_t begin = pattern.row_offsets()[row];
  for (index_t head = 0; head < in.dims.bias_heads; ++head) {
    for (index_t e = first; e < last; ++e) in.bias[head * pattern.nnz() + begin + e] = negative_infinity;
  }
}

// ---- one run of the kernel -----------------------------------------------------------------------------------
struct Run {
  bool strided = false;      // q, k, v: views of one [B, N, 3, H, D] buffer; out in [B, N, H, Dv] order
  bool async = true;         // cp.async gathers (dims multiples of 8, 16-byte aligned rows), else element-wise
  bool pair_stores = true;   // out written two elements at a time (even value_dim and strides)
  index_t out_gap = 0;       // contiguous out only: elements after each row that must stay untouched
  unsigned blocks = 3;
  // Mutations (0: none): the kernel told another head_group for k and v, or another bias_heads.
  index_t wrong_head_group = 0, wrong_bias_heads = 0;
};

// Runs the forward on `problem` as `run` says and compares. `report`: print mismatches (off for mutations,
// which must fail).
template <typename D>
bool forward_matches(const Problem& problem, const Run& run, bool report = true) {
  const Csr& pattern = problem.pattern;
  const AttentionDims& dims = problem.inputs.dims;
  const index_t rows = pattern.rows(), heads = dims.heads, images = dims.batch / heads;
  const index_t head_dim = dims.head_dim, value_dim = dims.value_dim;

  const Operands<D> operands(problem, run.strided, run.out_gap);
  if (!operands.valid) return false;
  const OperandLayout& out_layout = operands.out_layout;
  const index_t out_size =
      run.strided ? images * rows * heads * value_dim : dims.batch * rows * (value_dim + run.out_gap);
  std::vector<D> out(out_size, from_bits<D>(kPoison));
  std::vector<float> lse(dims.batch * rows, float_from_bits(kPoisonFloat));

  // The paths the case asks for must be the ones the launcher would allow.
  const bool pairs_allowed = reinterpret_cast<std::uintptr_t>(out.data()) % 4 == 0 && value_dim % 2 == 0 &&
                             out_layout.batch_stride % 2 == 0 && out_layout.head_stride % 2 == 0 &&
                             out_layout.row_stride % 2 == 0;
  if ((run.async && !gathers_aligned(operands, dims)) || (run.pair_stores && !pairs_allowed)) {
    std::printf("  test error: the case asks for cp.async gathers or paired stores the launcher would not use\n");
    return false;
  }

  kernels::GroupedArguments<D> args{};
  fill_problem_arguments(args, problem, operands);
  args.out = out.data();
  args.lse = lse.data();
  if (run.wrong_head_group > 0) args.k_layout.head_group = args.v_layout.head_group = run.wrong_head_group;
  if (run.wrong_bias_heads > 0) args.bias_heads = run.wrong_bias_heads;
  const kernels::FlashOptions options{run.async, run.pair_stores};
  const int shared_bytes = kernels::flash_layout(static_cast<int>(head_dim), static_cast<int>(value_dim),
                                                 operands.bias != nullptr, false)
                               .bytes;
  with_max_dim(head_dim, value_dim, [&](auto max_dim) {
    spattn_emulation::launch(kernels::attention_forward_flash_kernel<D, decltype(max_dim)::value>, run.blocks,
                             kernels::kFlashThreads, static_cast<std::size_t>(shared_bytes), args, options);
  });

  // out of every (problem, row) from its layout (a NaN the kernel did not write must not pass for an expected
  // NaN); the rest of the buffer untouched.
  std::vector<double> actual_out(dims.batch * rows * value_dim);
  std::vector<bool> covered(out.size(), false);
  for (index_t p = 0; p < dims.batch; ++p) {
    for (index_t r = 0; r < rows; ++r) {
      for (index_t d = 0; d < value_dim; ++d) {
        const index_t at = out_layout.problem_offset(p, heads) + r * out_layout.row_stride + d;
        covered[at] = true;
        actual_out[(p * rows + r) * value_dim + d] = written_value(out[at]);
      }
    }
  }
  bool untouched = true;
  for (std::size_t i = 0; i < out.size(); ++i) untouched &= covered[i] || bits_of(out[i]) == kPoison;
  if (report && !untouched) std::printf("  out: the kernel wrote outside the rows' elements\n");
  std::vector<double> actual_lse;
  for (float x : lse) actual_lse.push_back(written_value(x));
  const auto out_where = [&](std::size_t i) {
    const index_t element = static_cast<index_t>(i);
    return "out[problem " + std::to_string(element / (rows * value_dim)) + ", row " +
           std::to_string(element / value_dim % rows) + ", column " + std::to_string(element % value_dim) + "]";
  };
  const auto lse_where = [&](std::size_t i) {
    return "lse[problem " + std::to_string(i / rows) + ", row " + std::to_string(i % rows) + "]";
  };
  const bool out_ok = matches(actual_out, problem.expected.out, tolerance<D>(), out_where, report);
  const bool lse_ok = matches(actual_lse, problem.expected.lse, 1e-4, lse_where, report);
  return untouched && out_ok && lse_ok;
}

// Both storage types (the inputs are exact in both).
void check_both(const Problem& problem, const Run& run = {}) {
  CHECK(forward_matches<__half>(problem, run));
  CHECK(forward_matches<__nv_bfloat16>(problem, run));
}

// ---- patterns ------------------------------------------------------------------------------------------
// Groups wider than one key tile (rows 0-29: 150 columns, 3 tiles; rows 30-39: 65 columns, a last tile of
// one column), a group of 70 rows (two steps), rows of a random pattern, empty rows (115, 119).
Csr wide_and_long_groups() {
  const Csr random = random_with_empty_rows(10, 160, 0.3, 5, {5, 9});
  return from_mask(120, 160, [&](index_t r, index_t c) {
    if (r < 30) return c < 150;
    if (r < 40) return c >= 10 && c < 140 && c % 2 == 0;
    if (r < 110) return c >= 150;
    return in_row(random, r - 110, c);
  });
}

}  // namespace

TEST(swin_stage_windows_of_49_rows) {
  // 14 x 14 tokens, window 7: four groups of 49 rows and 49 keys (56 at n8 granularity), a step each.
  const Problem problem = make_problem(spattn::patterns::swin(14, 14, 7), shape_of(2, 2, 32, 32, 2), 1);
  const ScheduleFacts facts = schedule_facts(problem);
  CHECK(facts.steps == 4 && facts.longest_group == 49 && facts.widest_group == 49);
  check_both(problem);
  // 21 x 14 tokens: six windows; one bias head shared, head dim 64, three blocks over 12 items.
  check_both(make_problem(spattn::patterns::swin(21, 14, 7), shape_of(1, 2, 64, 64, 1), 2));
}

TEST(shifted_windows_sharing_steps) {
  // Groups of 49, 28, 21, 16, 12 and 9 rows; small ones share a step.
  const Problem problem = make_problem(spattn::patterns::swin(14, 14, 7, 3), shape_of(2, 2, 32, 32, 2), 3);
  const ScheduleFacts facts = schedule_facts(problem);
  CHECK(facts.shared_steps > 0);
  check_both(problem);
  // No bias; two blocks.
  Run run;
  run.blocks = 2;
  check_both(make_problem(spattn::patterns::swin(14, 14, 7, 3), shape_of(1, 2, 32, 32, 0), 4), run);
}

TEST(random_patterns_with_empty_rows_and_different_query_and_key_counts) {
  // Fewer queries than keys; rows 1 and 20 empty, row 5 masked by the bias; groups of one row.
  Shape shape = shape_of(2, 2, 32, 32, 2);
  shape.masked_row = 5;
  check_both(make_problem(random_with_empty_rows(37, 53, 0.4, 7, {1, 20}), shape, 5));
  // More queries than keys, no bias, element-wise gathers and single stores.
  Run run;
  run.async = false, run.pair_stores = false;
  check_both(make_problem(random_with_empty_rows(53, 37, 0.3, 8, {0, 52}), shape_of(1, 3, 32, 32, 0), 6), run);
}

TEST(groups_longer_than_a_step_and_wider_than_a_key_tile) {
  // Row 0: its first key tile entirely masked (the running maximum starts at -inf over a whole tile); row 2:
  // every key but the last masked (the only finite score in the third tile); row 31 (65 columns): masked but
  // for its lone column in the second tile; row 33: all masked; NaN in the query of row 3 of problem 1 (a
  // NaN over three tiles) and row 50 of problem 0 (the 70-row group).
  const auto edit = [](const Csr& pattern, Inputs& in) {
    mask_bias(pattern, in, 0, 0, 64);
    mask_bias(pattern, in, 2, 0, 149);
    mask_bias(pattern, in, 31, 0, 64);
    mask_bias(pattern, in, 33, 0, 65);
    nan_query(1, 3)(pattern, in);
    nan_query(0, 50)(pattern, in);
  };
  const Problem problem = make_problem(wide_and_long_groups(), shape_of(1, 2, 32, 32, 2), 7, edit);
  const ScheduleFacts facts = schedule_facts(problem);
  CHECK(facts.widest_group == 150 && facts.longest_group == 70);
  check_both(problem);
  // Shared bias head, head dim 64 with value dim 32, element-wise gathers.
  Run run;
  run.async = false;
  check_both(make_problem(wide_and_long_groups(), shape_of(1, 1, 64, 32, 1), 8), run);
}

TEST(head_dims) {
  const Csr pattern = spattn::patterns::swin(8, 8, 4, 2);
  Run run;
  // Multiples of 8 (cp.async): 64, 128 with a narrower value dim, 24 and 40 (not multiples of 16).
  check_both(make_problem(pattern, shape_of(1, 2, 64, 64, 2), 9), run);
  CHECK(forward_matches<__nv_bfloat16>(make_problem(pattern, shape_of(1, 1, 128, 64, 1), 10), run));
  CHECK(forward_matches<__half>(make_problem(pattern, shape_of(1, 1, 128, 128, 0), 11), run));
  check_both(make_problem(pattern, shape_of(1, 2, 24, 40, 2), 12), run);
  check_both(make_problem(pattern, shape_of(1, 2, 40, 24, 0), 13), run);
  // Not multiples of 8: element-wise gathers; an odd value dim: single stores.
  run.async = false;
  CHECK(forward_matches<__half>(make_problem(pattern, shape_of(1, 2, 17, 18, 2), 14), run));
  run.pair_stores = false;
  check_both(make_problem(pattern, shape_of(1, 2, 17, 9, 1), 15), run);
  CHECK(forward_matches<__nv_bfloat16>(make_problem(pattern, shape_of(1, 1, 100, 72, 1), 16), run));
}

TEST(nan_query_rows_and_rows_masked_by_the_bias) {
  // Shifted windows: NaN in the queries of row 0 of problem 0 and row 100 of problem 3; row 60 masked in
  // every bias head. Other rows of their groups (and problems) are exact.
  Shape shape = shape_of(2, 2, 32, 32, 2);
  shape.masked_row = 60;
  const auto edit = [](const Csr& pattern, Inputs& in) {
    nan_query(0, 0)(pattern, in);
    nan_query(3, 100)(pattern, in);
  };
  check_both(make_problem(spattn::patterns::swin(14, 14, 7, 3), shape, 17, edit));
}

TEST(strided_operands_of_one_projection) {
  // q, k, v in place in a [B, N, 3, H, D] projection, out written in [B, N, H, D] order.
  const Problem problem = make_problem(spattn::patterns::swin(14, 14, 7, 3), shape_of(2, 2, 32, 32, 2), 18);
  Run run;
  run.strided = true;
  check_both(problem, run);
  run.pair_stores = false;
  check_both(problem, run);
  run.async = false, run.pair_stores = true;
  CHECK(forward_matches<__half>(problem, run));
  // D = 20: the heads' rows of the projection do not start 16-byte aligned (head offsets of 20 elements), so
  // element-wise; bias shared by the heads.
  const Csr pattern = spattn::patterns::swin(14, 14, 7, 3);
  CHECK(forward_matches<__nv_bfloat16>(make_problem(pattern, shape_of(1, 2, 20, 20, 1), 19), run));
}

TEST(out_rows_with_gaps_and_grid_shapes) {
  const Problem problem = make_problem(spattn::patterns::swin(8, 8, 4, 2), shape_of(2, 2, 32, 32, 2), 20);
  Run run;
  run.out_gap = 8;  // out rows 40 elements apart: the 8 after each row stay untouched
  CHECK(forward_matches<__nv_bfloat16>(problem, run));
  run.out_gap = 3, run.pair_stores = false;  // odd row stride: single stores
  CHECK(forward_matches<__half>(problem, run));
  run = Run{};
  const index_t items = problem.plan.step_count() * problem.inputs.dims.batch;
  for (unsigned blocks : {1u, 2u, static_cast<unsigned>(items) + 3}) {  // one block; more blocks than items
    run.blocks = blocks;
    CHECK(forward_matches<__half>(problem, run));
  }
}

TEST(grouped_query_heads_and_a_bias_per_problem) {
  // 4 query heads over 2 k/v heads, shifted windows, bias [B, H, nnz]: each problem its own bias row.
  const Csr shifted = spattn::patterns::swin(14, 14, 7, 3);
  check_both(make_problem(shifted, shape_of(2, 4, 32, 32, 8, 2), 22));
  // MQA (4 query heads, one k/v head) on a random pattern with empty rows, Nq != Nk, head dim 64, bias [H, nnz].
  check_both(make_problem(random_with_empty_rows(37, 53, 0.4, 7, {1, 20}), shape_of(2, 4, 64, 64, 4, 4), 23));
  // Wide and long groups, 2 query heads per k/v head, element-wise gathers, single stores, odd dims.
  Run run;
  run.async = false, run.pair_stores = false;
  check_both(make_problem(wide_and_long_groups(), shape_of(1, 4, 17, 9, 4, 2), 24), run);
  // Views of one [B, N, H + 2 Hkv, D] projection (cp.async), out in [B, N, H, D] order; a bias per problem.
  run = Run{};
  run.strided = true;
  check_both(make_problem(spattn::patterns::swin(8, 8, 4, 2), shape_of(2, 4, 32, 32, 8, 2), 25), run);
}

TEST(mutations_make_the_comparison_fail) {
  // Swin windows (one step per window) and shifted windows (shared steps): the unmutated kernel passes, a
  // swapped A register in mma and a missing wait for the stage each fail.
  for (const index_t shift : {0, 3}) {
    const Problem problem = make_problem(spattn::patterns::swin(14, 14, 7, shift), shape_of(1, 2, 32, 32, 2), 21);
    CHECK(forward_matches<__half>(problem, Run{}));
    CHECK(!forward_matches<SwappedHalf>(problem, Run{}, /*report=*/false));
    skip_stage_wait = true;
    CHECK(!forward_matches<__half>(problem, Run{}, /*report=*/false));
    skip_stage_wait = false;
  }
  // Grouped-query attention read as MQA (every query head on k/v head 0) and a per-problem bias read per head
  // (the second image on the first one's bias) each fail.
  const Problem grouped = make_problem(spattn::patterns::swin(8, 8, 4, 2), shape_of(2, 4, 32, 32, 8, 2), 26);
  CHECK(forward_matches<__half>(grouped, Run{}));
  Run run;
  run.wrong_head_group = 4;
  CHECK(!forward_matches<__half>(grouped, run, /*report=*/false));
  run.wrong_head_group = 0, run.wrong_bias_heads = 4;
  CHECK(!forward_matches<__half>(grouped, run, /*report=*/false));
}

TEST_MAIN()

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
// entries masking whole rows or whole key tiles, no bias, q/k/v as strided views of one [B, N, 3, H, D]
// projection with out written in [B, N, H, Dv] order, out rows with gaps the kernel must not touch, and
// grids of 1 block, 2 or 3 blocks, and more blocks than items.
//
// Checked: out and lse of every row of every problem, and that nothing else in out's buffer is written.
// Mutations (a swapped A-fragment register in mma, a missing cp.async wait) must make the comparison fail;
// the hooks for them live in this file only (a storage type whose mma swaps two registers, and a switch in
// this file's specialisation of the kernel's wait), so the kernel runs unmodified.

#include "cuda_emulation.hpp"  // first: it prepares the kernels' headers for the host compiler

#include "attention_forward_flash_kernel.cuh"
#include "attention_reference.hpp"
#include "check.hpp"

#include <algorithm>
#include <functional>
#include <limits>
#include <set>

using spattn::Csr;
using spattn::index_t;
using spattn::OperandLayout;
using spattn::testing::Inputs;
using spattn::testing::make_inputs;
using spattn::testing::negative_infinity;
using spattn::testing::Reference;
using spattn::testing::Shape;
namespace kernels = spattn::cuda::detail;

// ---- mutation hooks -------------------------------------------------------------------------------------
namespace flash_test {
// When set, the kernel's wait for its current stage (cp_async_wait<1>) does nothing: the "missing wait"
// mutation. The stage's bytes then stay as the emulated cp.async leaves them at issue (NaN) when read.
inline bool skip_stage_wait = false;
}  // namespace flash_test

namespace spattn::cuda::detail {

// The emulation's cp_async_wait<1> (cuda/warp_primitives.cuh: the same body, keep them alike) with the
// mutation switch; declared before the kernel is instantiated, so the kernel of this test calls it.
template <>
inline void cp_async_wait<1>() {
  spattn_emulation::maybe_yield();
  if (flash_test::skip_stage_wait) return;
  spattn_emulation::current_block()->async_copies[threadIdx.x].wait(1);
}

// float16 whose m16n8k16 mma receives the A fragment with registers 1 and 2 swapped (rows g + 8, columns
// 2t.. and rows g, columns 2t + 8..): the "swapped fragment register" mutation. Everything else is __half's.
struct SwappedHalf {
  __half value;
};
inline float to_float(SwappedHalf x) { return __half2float(x.value); }
template <>
inline SwappedHalf from_float<SwappedHalf>(float x) {
  return {__float2half_rn(x)};
}
template <>
inline std::uint32_t pack2<SwappedHalf>(float lo, float hi) {
  return pack2<__half>(lo, hi);
}
template <>
inline void mma_m16n8k16<SwappedHalf>(Accumulator& d, const std::uint32_t (&a)[4], const std::uint32_t (&b)[2]) {
  const std::uint32_t swapped[4] = {a[0], a[2], a[1], a[3]};
  mma_m16n8k16<__half>(d, swapped, b);
}
template <>
inline void mma_m16n8k8<SwappedHalf>(Accumulator& d, const std::uint32_t (&a)[2], std::uint32_t b) {
  mma_m16n8k8<__half>(d, a, b);
}

}  // namespace spattn::cuda::detail

namespace {

using kernels::SwappedHalf;

template <typename D>
D to_storage(double x) {
  if constexpr (std::is_same_v<D, __half>) {
    return __float2half_rn(static_cast<float>(x));
  } else if constexpr (std::is_same_v<D, __nv_bfloat16>) {
    return __float2bfloat16_rn(static_cast<float>(x));
  } else {
    return SwappedHalf{__float2half_rn(static_cast<float>(x))};
  }
}
template <typename D>
double to_double(D x) {
  return kernels::to_float(x);
}
template <typename D>
std::uint16_t bits_of(D x) {
  static_assert(sizeof(D) == 2);
  std::uint16_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  return bits;
}
template <typename D>
D from_bits(std::uint16_t bits) {
  D x;
  std::memcpy(static_cast<void*>(&x), &bits, sizeof(x));
  return x;
}

template <typename D>
double tolerance() {
  return std::is_same_v<D, __nv_bfloat16> ? 3e-2 : 1e-2;
}

// What out's buffer holds where the kernel has not written (a NaN no conversion produces), and lse's.
constexpr std::uint16_t kUnwritten = 0xffff;
constexpr std::uint32_t kUnwrittenLse = 0x7fbadbad;

// ---- problems ----------------------------------------------------------------------------------------------
struct Problem {
  Csr pattern;
  spattn::ExecutionPlan plan;
  Inputs inputs;
  Reference expected;
  double scale = 1;
};

// The inputs of `shape` on `pattern`, edited by `edit` (NaN queries, -inf bias entries), and the reference.
// The float64 reference gives a row whose scores are all NaN zeros and -inf; the kernels' contract (and
// the other CUDA kernels') is a NaN row: a non-empty row with a NaN query element expects out and lse NaN.
Problem make_problem(Csr pattern, const Shape& shape, unsigned seed,
                     const std::function<void(const Csr&, Inputs&)>& edit = {}) {
  Problem problem{std::move(pattern), {}, {}, {}, 1};
  problem.plan = spattn::build_plan(problem.pattern.view());
  problem.inputs = make_inputs(problem.pattern, shape, seed);
  if (edit) edit(problem.pattern, problem.inputs);
  problem.scale = 1 / std::sqrt(static_cast<double>(shape.head_dim));
  problem.expected = spattn::testing::reference_attention(problem.pattern, problem.inputs, problem.scale);
  const spattn::AttentionDims& dims = problem.inputs.dims;
  const index_t rows = problem.pattern.rows();
  for (index_t p = 0; p < dims.batch; ++p) {
    for (index_t r = 0; r < rows; ++r) {
      if (problem.pattern.view().row_length(r) == 0) continue;
      bool nan_query = false;
      for (index_t d = 0; d < dims.head_dim; ++d) {
        nan_query |= std::isnan(problem.inputs.q[(p * rows + r) * dims.head_dim + d]);
      }
      if (!nan_query) continue;
      problem.expected.lse[p * rows + r] = std::numeric_limits<double>::quiet_NaN();
      for (index_t d = 0; d < dims.value_dim; ++d) {
        problem.expected.out[(p * rows + r) * dims.value_dim + d] = std::numeric_limits<double>::quiet_NaN();
      }
    }
  }
  return problem;
}

// Edits: query row `row` of problem `problem` gets a NaN; bias entries [first, last) of `row` (counted within
// the row) become -inf in every bias head.
std::function<void(const Csr&, Inputs&)> nan_query(index_t problem, index_t row) {
  return [=](const Csr& pattern, Inputs& in) { in.q[(problem * pattern.rows() + row) * in.dims.head_dim] = NAN; };
}
void mask_bias(const Csr& pattern, Inputs& in, index_t row, index_t first, index_t last) {
  const index_t begin = pattern.row_offsets()[row];
  for (index_t head = 0; head < in.dims.bias_heads; ++head) {
    for (index_t e = first; e < last; ++e) in.bias[head * pattern.nnz() + begin + e] = negative_infinity;
  }
}

// Facts about a plan's schedule that the cases claim to cover.
struct ScheduleFacts {
  index_t steps = 0, shared_steps = 0, widest_group = 0, longest_group = 0;
};
ScheduleFacts schedule_facts(const Problem& problem) {
  ScheduleFacts facts;
  const spattn::ExecutionPlan& plan = problem.plan;
  facts.steps = plan.step_count();
  for (index_t s = 0; s < plan.step_count(); ++s) {
    std::set<index_t> groups;
    for (index_t w = 0; w < spattn::kStepWarps; ++w) {
      const index_t g = plan.steps[(s * spattn::kStepWarps + w) * 2];
      if (g >= 0) groups.insert(g);
    }
    facts.shared_steps += groups.size() > 1;
  }
  for (index_t g = 0; g < plan.groups(); ++g) {
    facts.longest_group = std::max(facts.longest_group, plan.group_offsets[g + 1] - plan.group_offsets[g]);
    facts.widest_group =
        std::max(facts.widest_group, problem.pattern.view().row_length(plan.group_rows[plan.group_offsets[g]]));
  }
  return facts;
}

// ---- one run of the kernel -----------------------------------------------------------------------------------
struct Run {
  bool strided = false;      // q, k, v: views of one [B, N, 3, H, D] buffer; out in [B, N, H, Dv] order
  bool async = true;         // cp.async gathers (dims multiples of 8, 16-byte aligned rows), else element-wise
  bool pair_stores = true;   // out written two elements at a time (even value_dim and strides)
  index_t out_gap = 0;       // contiguous out only: elements after each row that must stay untouched
  unsigned blocks = 3;
};

bool starts_aligned_16(const void* pointer) { return reinterpret_cast<std::uintptr_t>(pointer) % 16 == 0; }
// As the launcher (cuda/attention_forward_flash.cu) decides.
bool rows_aligned(const void* base, const OperandLayout& layout, index_t dim) {
  return starts_aligned_16(base) && layout.batch_stride % 8 == 0 && layout.head_stride % 8 == 0 &&
         layout.row_stride % 8 == 0 && dim % 8 == 0;
}

// Relative to the largest finite expected magnitude (at least 1); infinities matched exactly; an expected
// NaN needs a NaN. Prints up to 5 mismatches, naming them through `where`, when `report`.
bool matches(const std::vector<double>& actual, const std::vector<double>& expected, double tolerance,
             const std::function<std::string(std::size_t)>& where, bool report) {
  double scale = 1;
  for (double value : expected) {
    if (std::isfinite(value)) scale = std::max(scale, std::abs(value));
  }
  int mismatches = 0;
  for (std::size_t i = 0; i < actual.size(); ++i) {
    const double a = actual[i], e = expected[i];
    const bool ok = std::isnan(e) ? std::isnan(a) : std::isinf(e) ? a == e : std::abs(a - e) <= tolerance * scale;
    if (ok) continue;
    if (report && mismatches < 5) std::printf("  %s: got %.8g, expected %.8g\n", where(i).c_str(), a, e);
    ++mismatches;
  }
  if (report && mismatches > 0) std::printf("  (%d mismatches of %zu)\n", mismatches, actual.size());
  return mismatches == 0;
}

template <typename D, int kMaxDim>
void launch(unsigned blocks, int shared_bytes, const kernels::GroupedArguments<D>& args,
            const kernels::FlashOptions& options) {
  spattn_emulation::launch(kernels::attention_forward_flash_kernel<D, kMaxDim>, blocks, kernels::kFlashThreads,
                           static_cast<std::size_t>(shared_bytes), args, options);
}

// Runs the forward on `problem` as `run` says and compares. `report`: print mismatches (off for mutations,
// which must fail).
template <typename D>
bool forward_matches(const Problem& problem, const Run& run, bool report = true) {
  const Csr& pattern = problem.pattern;
  const spattn::AttentionDims& dims = problem.inputs.dims;
  const Inputs& in = problem.inputs;
  const index_t rows = pattern.rows(), cols = pattern.cols(), heads = dims.heads, images = dims.batch / heads;
  const index_t head_dim = dims.head_dim, value_dim = dims.value_dim;

  std::vector<D> q, k, v, qkv;  // contiguous operands, or the one projection
  OperandLayout q_layout, k_layout, v_layout, out_layout;
  const D *q_pointer, *k_pointer, *v_pointer;
  if (run.strided) {
    if (rows != cols || head_dim != value_dim) {
      std::printf("  test error: a [B, N, 3, H, D] projection needs rows == cols and head_dim == value_dim\n");
      return false;
    }
    const index_t n = rows, d = head_dim;
    qkv.assign(images * n * 3 * heads * d, from_bits<D>(kUnwritten));
    const std::vector<double>* sources[3] = {&in.q, &in.k, &in.v};
    for (index_t b = 0; b < images; ++b) {
      for (index_t i = 0; i < n; ++i) {
        for (index_t s = 0; s < 3; ++s) {
          for (index_t h = 0; h < heads; ++h) {
            for (index_t e = 0; e < d; ++e) {
              qkv[(((b * n + i) * 3 + s) * heads + h) * d + e] =
                  to_storage<D>((*sources[s])[((b * heads + h) * n + i) * d + e]);
            }
          }
        }
      }
    }
    q_layout = k_layout = v_layout = {n * 3 * heads * d, d, 3 * heads * d};
    q_pointer = qkv.data();
    k_pointer = qkv.data() + heads * d;
    v_pointer = qkv.data() + 2 * heads * d;
    out_layout = {n * heads * value_dim, value_dim, heads * value_dim};
  } else {
    for (double x : in.q) q.push_back(to_storage<D>(x));
    for (double x : in.k) k.push_back(to_storage<D>(x));
    for (double x : in.v) v.push_back(to_storage<D>(x));
    q_layout = OperandLayout::contiguous(heads, rows, head_dim);
    k_layout = OperandLayout::contiguous(heads, cols, head_dim);
    v_layout = OperandLayout::contiguous(heads, cols, value_dim);
    out_layout = OperandLayout::contiguous(heads, rows, value_dim + run.out_gap);
    q_pointer = q.data();
    k_pointer = k.data();
    v_pointer = v.data();
  }
  std::vector<D> bias;
  if (dims.bias_heads > 0) {
    for (double x : in.bias) bias.push_back(to_storage<D>(x));
  }
  const D* bias_pointer = bias.empty() ? nullptr : bias.data();
  const index_t out_size =
      run.strided ? images * rows * heads * value_dim : dims.batch * rows * (value_dim + run.out_gap);
  std::vector<D> out(out_size, from_bits<D>(kUnwritten));
  float unwritten_lse;
  std::memcpy(&unwritten_lse, &kUnwrittenLse, sizeof(unwritten_lse));
  std::vector<float> lse(dims.batch * rows, unwritten_lse);

  // The paths the case asks for must be the ones the launcher would allow.
  const bool async_allowed = rows_aligned(q_pointer, q_layout, head_dim) &&
                             rows_aligned(k_pointer, k_layout, head_dim) &&
                             rows_aligned(v_pointer, v_layout, value_dim) &&
                             (bias_pointer == nullptr || starts_aligned_16(bias_pointer));
  const bool pairs_allowed = reinterpret_cast<std::uintptr_t>(out.data()) % 4 == 0 && value_dim % 2 == 0 &&
                             out_layout.batch_stride % 2 == 0 && out_layout.head_stride % 2 == 0 &&
                             out_layout.row_stride % 2 == 0;
  if ((run.async && !async_allowed) || (run.pair_stores && !pairs_allowed)) {
    std::printf("  test error: the case asks for cp.async gathers or paired stores the launcher would not use\n");
    return false;
  }

  kernels::GroupedArguments<D> args{};
  args.rows = rows;
  args.cols = cols;
  args.batch = dims.batch;
  args.head_dim = head_dim;
  args.value_dim = value_dim;
  args.bias_heads = dims.bias_heads;
  args.groups = problem.plan.groups();
  args.row_offsets = pattern.row_offsets().data();
  args.col_indices = pattern.col_indices().data();
  args.group_offsets = problem.plan.group_offsets.data();
  args.group_rows = problem.plan.group_rows.data();
  args.q = q_pointer;
  args.k = k_pointer;
  args.v = v_pointer;
  args.bias = bias_pointer;
  args.out = out.data();
  args.lse = lse.data();
  args.scale = static_cast<float>(problem.scale);
  args.heads = heads;
  args.q_layout = q_layout;
  args.k_layout = k_layout;
  args.v_layout = v_layout;
  args.out_layout = out_layout;
  args.step_count = problem.plan.step_count();
  args.steps = problem.plan.steps.data();
  const kernels::FlashOptions options{run.async, run.pair_stores};
  const int shared_bytes =
      kernels::flash_layout(static_cast<int>(head_dim), static_cast<int>(value_dim), bias_pointer != nullptr, false)
          .bytes;
  const index_t widest = std::max(head_dim, value_dim);
  if (widest <= 32) {
    launch<D, 32>(run.blocks, shared_bytes, args, options);
  } else if (widest <= 64) {
    launch<D, 64>(run.blocks, shared_bytes, args, options);
  } else {
    launch<D, 128>(run.blocks, shared_bytes, args, options);
  }

  // out of every (problem, row) from its layout; the rest of the buffer untouched.
  std::vector<double> actual_out(dims.batch * rows * value_dim);
  std::vector<bool> covered(out.size(), false);
  for (index_t p = 0; p < dims.batch; ++p) {
    for (index_t r = 0; r < rows; ++r) {
      for (index_t d = 0; d < value_dim; ++d) {
        const index_t at = out_layout.problem_offset(p, heads) + r * out_layout.row_stride + d;
        covered[at] = true;
        // A NaN the kernel did not write must not pass for an expected NaN.
        actual_out[(p * rows + r) * value_dim + d] =
            bits_of(out[at]) == kUnwritten ? std::numeric_limits<double>::infinity() : to_double(out[at]);
      }
    }
  }
  bool untouched = true;
  for (std::size_t i = 0; i < out.size(); ++i) untouched &= covered[i] || bits_of(out[i]) == kUnwritten;
  if (report && !untouched) std::printf("  out: the kernel wrote outside the rows' elements\n");
  std::vector<double> actual_lse;
  for (float x : lse) {
    std::uint32_t bits;
    std::memcpy(&bits, &x, sizeof(bits));
    actual_lse.push_back(bits == kUnwrittenLse ? std::numeric_limits<double>::infinity() : x);
  }
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
Csr from_mask(index_t rows, index_t cols, const std::function<bool(index_t, index_t)>& keep) {
  std::vector<std::uint8_t> mask(rows * cols);
  for (index_t r = 0; r < rows; ++r) {
    for (index_t c = 0; c < cols; ++c) mask[r * cols + c] = keep(r, c) ? 1 : 0;
  }
  return Csr::from_dense(mask.data(), rows, cols);
}

// A random pattern with rows `empty` emptied.
Csr random_with_empty_rows(index_t rows, index_t cols, double density, std::uint64_t seed,
                           const std::vector<index_t>& empty) {
  const Csr random = spattn::patterns::random(rows, cols, density, seed);
  return from_mask(rows, cols, [&](index_t r, index_t c) {
    if (std::find(empty.begin(), empty.end(), r) != empty.end()) return false;
    const auto begin = random.col_indices().begin() + random.row_offsets()[r];
    const auto end = random.col_indices().begin() + random.row_offsets()[r + 1];
    return std::binary_search(begin, end, c);
  });
}

// Groups wider than one key tile (rows 0-29: 150 columns, 3 tiles; rows 30-39: 65 columns, a last tile of
// one column), a group of 70 rows (two steps), rows of a random pattern, empty rows (115, 119).
Csr wide_and_long_groups() {
  const Csr random = random_with_empty_rows(10, 160, 0.3, 5, {5, 9});
  return from_mask(120, 160, [&](index_t r, index_t c) {
    if (r < 30) return c < 150;
    if (r < 40) return c >= 10 && c < 140 && c % 2 == 0;
    if (r < 110) return c >= 150;
    const auto begin = random.col_indices().begin() + random.row_offsets()[r - 110];
    const auto end = random.col_indices().begin() + random.row_offsets()[r - 110 + 1];
    return std::binary_search(begin, end, c);
  });
}

Shape shape_of(index_t images, index_t heads, index_t head_dim, index_t value_dim, index_t bias_heads) {
  Shape shape;
  shape.images = images, shape.heads = heads, shape.head_dim = head_dim, shape.value_dim = value_dim;
  shape.bias_heads = bias_heads;
  return shape;
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

TEST(mutations_make_the_comparison_fail) {
  // Swin windows (one step per window) and shifted windows (shared steps): the unmutated kernel passes, a
  // swapped A register in mma and a missing wait for the stage each fail.
  for (const index_t shift : {0, 3}) {
    const Problem problem = make_problem(spattn::patterns::swin(14, 14, 7, shift), shape_of(1, 2, 32, 32, 2), 21);
    CHECK(forward_matches<__half>(problem, Run{}));
    CHECK(!forward_matches<SwappedHalf>(problem, Run{}, /*report=*/false));
    flash_test::skip_stage_wait = true;
    CHECK(!forward_matches<__half>(problem, Run{}, /*report=*/false));
    flash_test::skip_stage_wait = false;
  }
}

TEST_MAIN()

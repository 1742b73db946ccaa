// The register-resident tensor-core backward (cuda/attention_backward_flash_kernel.cuh) run on the CPU through
// cuda_emulation.hpp and the emulated warp primitives of cuda/warp_primitives.cuh (mma.sync, ldmatrix and
// cp.async lane by lane, after the PTX ISA's fragment layouts), against the float64 reference
// (attention_reference.hpp: its dQ, dK, dV, dBias and delta), in float16 and bfloat16. The kernel gets the
// forward's results from the reference: out rounded to the storage type, lse as float. The schedule is
// build_plan's; grids of 2 or 3 blocks walk several (step, problem set) items each, change step and reuse both
// stages of the ring, as the launcher's persistent grid does (cuda/attention_backward_flash.cu).
//
// Covered: Swin stage windows (groups of 49 rows, a step each), shifted windows (groups of 9 to 49 rows
// sharing steps, every column owned), random patterns with empty rows and Nq != Nk (columns shared between
// groups: unowned), a group longer than one step (its columns unowned, its dQ complete), groups wider than
// one key tile whose columns they own (dK / dV per tile, the bias gradient's read-modify-write per tile),
// columns without entries, head dims 32, 64, 128, 24 and 40 (cp.async and element-wise gathers), 17 and 9
// (element-wise, single stores), value_dim != head_dim, no bias, bias [1, nnz] and [H, nnz] with and
// without its gradient, the bias gradient over 1 to 4 chunks of problems (a chunk without problems writes
// zeros), a [B, H, nnz] bias (one per problem) and its gradient, rows the bias masks entirely (zero
// gradients), a NaN query (NaN exactly where it reaches), q / k / v as strided views of one [B, N, 3, H, D]
// projection with out and grad_out in [B, N, H, Dv] order, a gradient reaching lse (grad_lse, folded into
// delta), and grouped-query attention (2 and 4 query heads per k/v head, MQA; contiguous and views of one
// [B, N, H + 2 Hkv, D] projection): the kernel's per-query-head dK and dV partials, then the launcher's
// reduction (cuda/attention_backward_passes.cuh, emulated too) into each k/v head's dK and dV.
//
// Also the whole backward as attention_backward.cu launches it, with the SIMT passes
// (cuda/attention_backward_passes.cuh) in the shapes of unaligned operands: with the schedule, and without a
// plan.
//
// Checked: delta of every (problem, row), dQ of every row, dK and dV of every owned column (the complement of
// plan.unowned_columns, itself checked against the definition) and the unowned columns' poison untouched (the
// whole backward: every column, and the final grad_bias),
// every bias partial sum written, their sum over chunks against dBias, guard elements after every output
// buffer untouched; two runs (and a third on another grid) bitwise equal. Mutations (a swapped A-fragment
// register in mma, a missing cp.async wait, grad_lse dropped, k/v heads grouped wrongly) make the comparison
// fail; the hooks of the first two live in the tests' flash_emulation.hpp, so the kernel runs unmodified.

#include "cuda_emulation.hpp"  // first: it prepares the kernels' headers for the host compiler

#include "attention_backward_flash_kernel.cuh"
#include "attention_backward_passes.cuh"
#include "check.hpp"
#include "flash_emulation.hpp"  // after the kernel: its mutation hooks specialise the kernel's primitives

#include <algorithm>
#include <chrono>
#include <functional>
#include <limits>
#include <set>

using namespace flash_emulation;

namespace {

constexpr double quiet_nan = std::numeric_limits<double>::quiet_NaN();

// How many guard elements follow each output buffer.
constexpr index_t kGuard = 16;

// ---- problems ----------------------------------------------------------------------------------------------
struct BackwardProblem : Problem {
  spattn::Transposed transposed;
  std::vector<bool> owned;  // the columns the kernel completes (not in plan.unowned_columns)
};

// Columns whose entries all lie in one group of at most kStepRows rows, by the definition (spattn/plan.hpp).
std::vector<bool> owned_by_definition(const Csr& pattern, const spattn::ExecutionPlan& plan) {
  std::vector<index_t> group_of_row(pattern.rows(), -1);
  for (index_t g = 0; g < plan.groups(); ++g) {
    for (index_t i = plan.group_offsets[g]; i < plan.group_offsets[g + 1]; ++i) group_of_row[plan.group_rows[i]] = g;
  }
  std::vector<std::set<index_t>> groups_of_column(pattern.cols());
  for (index_t r = 0; r < pattern.rows(); ++r) {
    for (index_t e = pattern.row_offsets()[r]; e < pattern.row_offsets()[r + 1]; ++e) {
      groups_of_column[pattern.col_indices()[e]].insert(group_of_row[r]);
    }
  }
  std::vector<bool> owned(pattern.cols(), false);
  for (index_t c = 0; c < pattern.cols(); ++c) {
    if (groups_of_column[c].size() != 1) continue;
    const index_t g = *groups_of_column[c].begin();
    owned[c] = plan.group_offsets[g + 1] - plan.group_offsets[g] <= spattn::kStepRows;
  }
  return owned;
}

// The reference of `pattern` with its transpose and owned columns. delta is the kernel's: rowsum(dO * O) less
// grad_lse (on every row: an empty row has O = 0). A non-empty row with a NaN query element expects, as the
// kernels' contract: NaN out and lse (the forward's), NaN delta and dQ of the row, NaN dK and dV of the row's
// columns (of its k/v problem) and NaN dBias of its entries (in its problem's bias head).
BackwardProblem make_problem(Csr pattern, const Shape& shape, unsigned seed, const Edit& edit = {}) {
  BackwardProblem problem{make_reference_problem(std::move(pattern), shape, seed, edit), {}, {}};
  problem.transposed = spattn::transpose(problem.pattern.view());
  problem.owned.assign(problem.pattern.cols(), true);
  for (index_t c : problem.plan.unowned_columns) problem.owned[c] = false;

  const AttentionDims& dims = problem.inputs.dims;
  const Csr& p = problem.pattern;
  const index_t rows = p.rows(), cols = p.cols(), nnz = p.nnz(), D = dims.head_dim, Dv = dims.value_dim;
  Reference& g = problem.expected;
  if (!problem.inputs.grad_lse.empty()) {
    for (std::size_t i = 0; i < g.delta.size(); ++i) g.delta[i] -= problem.inputs.grad_lse[i];
  }
  for_each_nan_query_row(problem, [&](index_t b, index_t r) {
    const index_t kv = b / dims.head_group;  // (query problem b * H + h reads k/v problem b * Hkv + h / g)
    g.lse[b * rows + r] = g.delta[b * rows + r] = quiet_nan;
    for (index_t d = 0; d < Dv; ++d) g.out[(b * rows + r) * Dv + d] = quiet_nan;
    for (index_t d = 0; d < D; ++d) g.grad_q[(b * rows + r) * D + d] = quiet_nan;
    for (index_t e = p.row_offsets()[r]; e < p.row_offsets()[r + 1]; ++e) {
      const index_t c = p.col_indices()[e];
      for (index_t d = 0; d < D; ++d) g.grad_k[(kv * cols + c) * D + d] = quiet_nan;
      for (index_t d = 0; d < Dv; ++d) g.grad_v[(kv * cols + c) * Dv + d] = quiet_nan;
      if (dims.bias_heads > 0) g.grad_bias[(b % dims.bias_heads) * nnz + e] = quiet_nan;
    }
  });
  return problem;
}

// Facts about a plan that the cases claim to cover: its schedule's, and its owned columns'.
struct PlanFacts : ScheduleFacts {
  index_t owned = 0, unowned = 0, owned_wide_columns = 0, empty_rows = 0;
};
PlanFacts plan_facts(const BackwardProblem& problem) {
  PlanFacts facts{schedule_facts(problem)};
  const spattn::ExecutionPlan& plan = problem.plan;
  const spattn::CsrView pattern = problem.pattern.view();
  for (index_t g = 0; g < plan.groups(); ++g) {
    const index_t first = plan.group_rows[plan.group_offsets[g]];
    if (pattern.row_length(first) <= spattn::kStepKeys) continue;
    for (index_t e = pattern.row_offsets[first]; e < pattern.row_offsets[first + 1]; ++e) {
      facts.owned_wide_columns += problem.owned[pattern.col_indices[e]];
    }
  }
  for (bool owned : problem.owned) (owned ? facts.owned : facts.unowned) += 1;
  for (index_t r = 0; r < pattern.rows; ++r) facts.empty_rows += pattern.row_length(r) == 0;
  return facts;
}

// ---- one run of the kernel -----------------------------------------------------------------------------------
// What runs: the tensor-core kernel alone (with the partials' sum under grouped-query attention), or the whole
// backward as attention_backward.cu launches it (cuda/attention_backward_passes.cuh: the SIMT passes), with the
// plan's schedule (the tensor-core kernel, then the column pass over its unowned columns and the bias
// gradient's final sum) or without a plan (row pass, column pass over every column, final sum).
enum class Path { tensor_cores, with_schedule, without_plan };

struct Run {
  Path path = Path::tensor_cores;
  bool strided = false;  // q, k, v: views of one [B, N, 3, H, D] buffer; out, grad_out in [B, N, H, Dv] order
  bool async = true;     // cp.async gathers (dims multiples of 8, 16-byte aligned rows), else element-wise
  unsigned blocks = 3;
  index_t chunks = 0;  // the bias gradient's chunks per bias head (0: no bias gradient)
  // Mutations: the kernel not given the problem's grad_lse; the kernels told another head_group (0: none).
  bool drop_grad_lse = false;
  index_t wrong_head_group = 0;
};

// What the kernel wrote (each buffer followed by kGuard guard elements).
template <typename D>
struct Outputs {
  std::vector<D> grad_q, grad_k, grad_v;
  std::vector<D> grad_bias;  // the final sum (whole backward with a bias gradient)
  std::vector<float> delta, bias_sums, key_partial, value_partial;
  index_t chunks = 0, problems_per_chunk = 1;
  bool whole = false;  // the whole backward ran: every column's dK and dV, grad_bias
  bool valid = false;  // false: the case asked for something the launcher would not do
};

// Lays out the operands as `run` says, runs the kernel and returns what it wrote.
template <typename D>
Outputs<D> run_backward(const BackwardProblem& problem, const Run& run) {
  Outputs<D> result;
  const Csr& pattern = problem.pattern;
  const spattn::AttentionDims& dims = problem.inputs.dims;
  const Inputs& in = problem.inputs;
  const index_t rows = pattern.rows(), cols = pattern.cols(), nnz = pattern.nnz();
  const index_t head_dim = dims.head_dim, value_dim = dims.value_dim, kv_batch = dims.kv_batch();

  // The forward's results as the forward kernel leaves them: out in the storage type, lse in float; the
  // gradient reaching lse, if any, in float.
  std::vector<float> lse, grad_lse;
  for (double x : problem.expected.lse) lse.push_back(static_cast<float>(x));
  for (double x : in.grad_lse) grad_lse.push_back(static_cast<float>(x));

  const Operands<D> operands(problem, run.strided);
  if (!operands.valid) return result;
  const OperandLayout& out_layout = operands.out_layout;
  std::vector<D> out(dims.batch * rows * value_dim, from_bits<D>(kPoison));
  std::vector<D> grad_out(dims.batch * rows * value_dim, from_bits<D>(kPoison));
  place(out, out.data(), out_layout, problem.expected.out, dims, rows, value_dim);
  place(grad_out, grad_out.data(), out_layout, in.grad_out, dims, rows, value_dim);

  // The gathers the case asks for must be ones the launcher would choose.
  const bool async_allowed = gathers_aligned(operands, dims) &&
                             kernels::rows_copyable(out.data(), out_layout, value_dim) &&
                             kernels::rows_copyable(grad_out.data(), out_layout, value_dim);
  if (run.async && !async_allowed) {
    std::printf("  test error: the case asks for cp.async gathers the launcher would not use\n");
    return result;
  }
  if (run.chunks > 0 && operands.bias == nullptr) {
    std::printf("  test error: a bias gradient needs a bias\n");
    return result;
  }

  // Outputs poisoned, guards after each.
  result.grad_q.assign(dims.batch * rows * head_dim + kGuard, from_bits<D>(kPoison));
  result.grad_k.assign(kv_batch * cols * head_dim + kGuard, from_bits<D>(kPoison));
  result.grad_v.assign(kv_batch * cols * value_dim + kGuard, from_bits<D>(kPoison));
  result.delta.assign(dims.batch * rows + kGuard, float_from_bits(kPoisonFloat));
  if (dims.head_group > 1) {  // the workspace's per-query-problem dK and dV (cuda/attention_workspace.hpp)
    result.key_partial.assign(dims.batch * cols * head_dim + kGuard, float_from_bits(kPoisonFloat));
    result.value_partial.assign(dims.batch * cols * value_dim + kGuard, float_from_bits(kPoisonFloat));
  }
  kernels::FlashBackwardOptions options{{run.async, false}, dims.batch, 1, nullptr};
  result.whole = run.path != Path::tensor_cores;
  if (result.whole && run.chunks > 0) result.grad_bias.assign(dims.bias_heads * nnz + kGuard, from_bits<D>(kPoison));
  if (run.path == Path::without_plan && run.chunks > 0) {
    // The row pass's chunks, as the workspace sizes them (cuda/attention_workspace.hpp).
    result.chunks = kernels::bias_chunks(dims.batch, dims.bias_heads);
    result.problems_per_chunk = kernels::kProblemsPerBiasChunk;
    result.bias_sums.assign(result.chunks * dims.bias_heads * nnz + kGuard, float_from_bits(kPoisonFloat));
    options.bias_sums = result.bias_sums.data();
  } else if (run.chunks > 0) {
    // As the launcher splits a bias head's problems into chunks.
    const index_t problems_per_head = (dims.batch + dims.bias_heads - 1) / dims.bias_heads;
    result.chunks = run.chunks;
    result.problems_per_chunk = (problems_per_head + run.chunks - 1) / run.chunks;
    result.bias_sums.assign(run.chunks * dims.bias_heads * nnz + kGuard, float_from_bits(kPoisonFloat));
    options.problem_sets = dims.bias_heads * run.chunks;
    options.problems_per_chunk = result.problems_per_chunk;
    options.bias_sums = result.bias_sums.data();
  }

  kernels::BackwardArguments<D> args{};
  fill_problem_arguments(args, problem, operands);
  args.transposed_row_offsets = problem.transposed.pattern.row_offsets().data();
  args.transposed_col_indices = problem.transposed.pattern.col_indices().data();
  args.permutation = problem.transposed.permutation.data();
  args.out = out.data();
  args.grad_out = grad_out.data();
  args.lse = lse.data();
  args.grad_lse = grad_lse.empty() || run.drop_grad_lse ? nullptr : grad_lse.data();
  args.grad_q = result.grad_q.data();
  args.grad_k = result.grad_k.data();
  args.grad_v = result.grad_v.data();
  args.grad_bias = nullptr;  // the launcher's final sum; the kernel reads options.bias_sums
  args.delta = result.delta.data();
  args.key_partial = result.key_partial.empty() ? nullptr : result.key_partial.data();
  args.value_partial = result.value_partial.empty() ? nullptr : result.value_partial.data();
  args.bias_partial = options.bias_sums;
  args.bias_chunks = result.chunks;
  args.grad_out_layout = out_layout;
  args.unowned_column_count = static_cast<index_t>(problem.plan.unowned_columns.size());
  args.unowned_columns = problem.plan.unowned_columns.data();
  if (run.wrong_head_group > 0) args.k_layout.head_group = args.v_layout.head_group = run.wrong_head_group;

  const unsigned simt_blocks = 2;  // the SIMT passes' grids stride: a small one walks several items per thread
  if (run.path != Path::without_plan) {
    const int shared_bytes = kernels::flash_layout(static_cast<int>(head_dim), static_cast<int>(value_dim),
                                                   operands.bias != nullptr, true, options.bias_sums != nullptr)
                                 .bytes;
    with_max_dim(head_dim, value_dim, [&](auto max_dim) {
      spattn_emulation::launch(kernels::attention_backward_flash_kernel<D, decltype(max_dim)::value>, run.blocks,
                               kernels::kFlashThreads, static_cast<std::size_t>(shared_bytes), args, options);
    });
    // Grouped-query attention: the launcher's reduction of the partials into dK and dV.
    if (args.key_partial != nullptr) {
      spattn_emulation::launch(kernels::attention_backward_sum_partials_kernel<D>, simt_blocks,
                               kernels::kThreadsPerBlock, 0, args);
    }
  }
  if (result.whole) {
    // The SIMT passes as launch_backward orders them, in the shapes of unaligned operands (a warp per item:
    // the emulation's shuffles take whole warps).
    if (run.chunks > 0) args.grad_bias = result.grad_bias.data();
    const bool listed = run.path == Path::with_schedule;
    kernels::dispatch_fragment_shape(head_dim, value_dim, false, [&](auto shape) {
      using Shape = decltype(shape);
      if (!listed) {
        spattn_emulation::launch(kernels::attention_backward_rows_kernel<Shape, D>, simt_blocks,
                                 kernels::kThreadsPerBlock, 0, args);
      }
      spattn_emulation::launch(kernels::attention_backward_columns_kernel<Shape, D>, simt_blocks,
                               kernels::kThreadsPerBlock, 0, args, listed);
    });
    if (run.chunks > 0) {
      spattn_emulation::launch(kernels::attention_backward_bias_kernel<D>, simt_blocks, kernels::kThreadsPerBlock, 0,
                               rows, args.row_offsets, args.bias_partial, args.grad_bias, dims.bias_heads,
                               result.chunks);
    }
  }
  result.valid = true;
  return result;
}

template <typename T>
bool guards_intact(const std::vector<T>& buffer) {
  for (std::size_t i = buffer.size() - kGuard; i < buffer.size(); ++i) {
    if (std::isfinite(written_value(buffer[i]))) return false;
  }
  return true;
}

// Compares what the kernel wrote with the reference.
template <typename D>
bool outputs_match(const BackwardProblem& problem, const Outputs<D>& result, bool report) {
  if (!result.valid) return false;
  const Csr& pattern = problem.pattern;
  const spattn::AttentionDims& dims = problem.inputs.dims;
  const Reference& expected = problem.expected;
  const index_t rows = pattern.rows(), cols = pattern.cols(), nnz = pattern.nnz();
  const double tol = tolerance<D>();
  bool ok = true;

  const auto intact = [](const std::vector<float>& buffer) { return buffer.empty() || guards_intact(buffer); };
  const auto intact_storage = [](const std::vector<D>& buffer) { return buffer.empty() || guards_intact(buffer); };
  const bool guards = guards_intact(result.grad_q) && guards_intact(result.grad_k) && guards_intact(result.grad_v) &&
                      guards_intact(result.delta) && intact(result.bias_sums) && intact(result.key_partial) &&
                      intact(result.value_partial) && intact_storage(result.grad_bias);
  if (report && !guards) std::printf("  an output's guard elements were written\n");
  ok &= guards;

  // delta (from the rounded out: it only feeds dS) and dQ of every row.
  std::vector<double> delta, grad_q;
  for (index_t i = 0; i < dims.batch * rows; ++i) delta.push_back(written_value(result.delta[i]));
  for (index_t i = 0; i < dims.batch * rows * dims.head_dim; ++i) grad_q.push_back(written_value(result.grad_q[i]));
  const auto row_where = [&](const char* name, index_t dim) {
    return [=](std::size_t i) {
      const index_t at = static_cast<index_t>(i);
      return std::string(name) + "[problem " + std::to_string(at / dim / rows) + ", row " +
             std::to_string(at / dim % rows) + ", dim " + std::to_string(at % dim) + "]";
    };
  };
  ok &= matches(delta, expected.delta, tol, row_where("delta", 1), report);
  ok &= matches(grad_q, expected.grad_q, tol, row_where("grad_q", dims.head_dim), report);

  // dK and dV (of the k/v problems): owned columns against the reference, the others untouched (all of them
  // against the reference after the whole backward).
  const auto columns = [&](const std::vector<D>& grad, const std::vector<double>& reference, index_t dim,
                           const char* name) {
    std::vector<double> actual_owned, expected_owned;
    std::vector<std::string> names;
    bool untouched = true;
    for (index_t p = 0; p < dims.kv_batch(); ++p) {
      for (index_t c = 0; c < cols; ++c) {
        for (index_t d = 0; d < dim; ++d) {
          const index_t i = (p * cols + c) * dim + d;
          if (problem.owned[c] || result.whole) {
            actual_owned.push_back(written_value(grad[i]));
            expected_owned.push_back(reference[i]);
            names.push_back(std::string(name) + "[problem " + std::to_string(p) + ", column " + std::to_string(c) +
                            ", dim " + std::to_string(d) + "]");
          } else {
            untouched &= bits_of(grad[i]) == kPoison;
          }
        }
      }
    }
    if (report && !untouched) std::printf("  %s: an unowned column was written\n", name);
    return untouched && matches(actual_owned, expected_owned, tol, [&](std::size_t i) { return names[i]; }, report);
  };
  ok &= columns(result.grad_k, expected.grad_k, dims.head_dim, "grad_k");
  ok &= columns(result.grad_v, expected.grad_v, dims.value_dim, "grad_v");

  // The bias gradient: every partial sum written, chunks without problems all zeros, their sum dBias (and,
  // after the whole backward, the final sum).
  if (!result.grad_bias.empty()) {
    std::vector<double> grad_bias;
    for (std::size_t i = 0; i + kGuard < result.grad_bias.size(); ++i) {
      grad_bias.push_back(written_value(result.grad_bias[i]));
    }
    const auto where = [&](std::size_t i) {
      const index_t at = static_cast<index_t>(i);
      return "grad_bias (final)[head " + std::to_string(at / nnz) + ", entry " + std::to_string(at % nnz) + "]";
    };
    ok &= matches(grad_bias, expected.grad_bias, tol, where, report);
  }
  if (result.chunks > 0) {
    const index_t slice = dims.bias_heads * nnz;
    std::vector<double> grad_bias(slice, 0);
    bool all_written = true, empty_chunks_zero = true;
    for (index_t chunk = 0; chunk < result.chunks; ++chunk) {
      for (index_t head = 0; head < dims.bias_heads; ++head) {
        const bool no_problems = head + dims.bias_heads * chunk * result.problems_per_chunk >= dims.batch;
        for (index_t e = 0; e < nnz; ++e) {
          const index_t i = chunk * slice + head * nnz + e;
          const double x = written_value(result.bias_sums[i]);
          all_written &= !std::isinf(x);
          if (no_problems) empty_chunks_zero &= float_bits(result.bias_sums[i]) == 0;
          grad_bias[head * nnz + e] += x;
        }
      }
    }
    if (report && !all_written) std::printf("  bias_sums: a partial sum was not written\n");
    if (report && !empty_chunks_zero) std::printf("  bias_sums: a chunk without problems is not all +0\n");
    const auto where = [&](std::size_t i) {
      const index_t at = static_cast<index_t>(i);
      return "grad_bias[head " + std::to_string(at / nnz) + ", entry " + std::to_string(at % nnz) + "]";
    };
    ok &= all_written && empty_chunks_zero && matches(grad_bias, expected.grad_bias, tol, where, report);
  }
  return ok;
}

template <typename D>
bool backward_matches(const BackwardProblem& problem, const Run& run, bool report = true) {
  return outputs_match(problem, run_backward<D>(problem, run), report);
}

// Both storage types (the inputs are exact in both).
void check_both(const BackwardProblem& problem, const Run& run = {}) {
  CHECK(backward_matches<__half>(problem, run));
  CHECK(backward_matches<__nv_bfloat16>(problem, run));
}

// ---- patterns ------------------------------------------------------------------------------------------
// 110 rows, 260 columns:
//   rows 0-19     columns 0-99      a group of 20 rows, 100 owned columns: 2 key tiles (64 + 36)
//   rows 20-29    columns 100-229   10 rows, 130 owned columns: 3 key tiles (64 + 64 + 2)
//   rows 30-99    columns 230-239   a group of 70 rows (two steps): its columns unowned
//   rows 100-109  random over columns 235-254 (rows 103 and 107 empty): columns shared between the
//                 one-row groups and with the 70-row group; those in one row only are owned
//   columns 255-259 without entries (unowned)
Csr wide_and_long_groups() {
  const Csr random = random_with_empty_rows(10, 20, 0.35, 11, {3, 7});
  return from_mask(110, 260, [&](index_t r, index_t c) {
    if (r < 20) return c < 100;
    if (r < 30) return c >= 100 && c < 230;
    if (r < 100) return c >= 230 && c < 240;
    return c >= 235 && c < 255 && in_row(random, r - 100, c - 235);
  });
}

Run run_with(unsigned blocks, index_t chunks, bool async = true) {
  Run run;
  run.blocks = blocks, run.chunks = chunks, run.async = async;
  return run;
}

}  // namespace

TEST(plan_unowned_columns_match_the_definition) {
  // The test trusts plan.unowned_columns for which columns to compare: check it on every pattern used.
  for (const Csr& pattern : {spattn::patterns::swin(14, 14, 7), spattn::patterns::swin(14, 14, 7, 3),
                             spattn::patterns::swin(8, 8, 4, 2), random_with_empty_rows(37, 53, 0.12, 7, {1, 20}),
                             wide_and_long_groups()}) {
    const spattn::ExecutionPlan plan = spattn::build_plan(pattern.view());
    std::vector<bool> owned(pattern.cols(), true);
    for (index_t c : plan.unowned_columns) owned[c] = false;
    CHECK(owned == owned_by_definition(pattern, plan));
  }
}

TEST(swin_stage_windows_of_49_rows) {
  // 14 x 14 tokens, window 7: four groups of 49 rows and 49 keys (56 at n8 granularity), a step each, every
  // column owned. Bias [H, nnz]: without its gradient, then with it in one chunk.
  const BackwardProblem problem = make_problem(spattn::patterns::swin(14, 14, 7), shape_of(2, 2, 32, 32, 2), 1);
  const PlanFacts facts = plan_facts(problem);
  CHECK(facts.steps == 4 && facts.longest_group == 49 && facts.widest_group == 49 && facts.unowned == 0);
  check_both(problem, run_with(3, 0));
  check_both(problem, run_with(3, 1));
}

TEST(shifted_windows_sharing_steps) {
  // Groups of 49, 28, 21, 16, 12 and 9 rows; small ones share a step; every column owned. Bias [1, nnz]
  // with its gradient in two chunks of two problems (sets of two problems: per-item sums in shared memory).
  const BackwardProblem problem = make_problem(spattn::patterns::swin(14, 14, 7, 3), shape_of(2, 2, 32, 32, 1), 3);
  const PlanFacts facts = plan_facts(problem);
  CHECK(facts.shared_steps > 0 && facts.unowned == 0);
  check_both(problem, run_with(2, 2));
  // No bias.
  check_both(make_problem(spattn::patterns::swin(14, 14, 7, 3), shape_of(1, 2, 32, 32, 0), 4), run_with(2, 0));
}

TEST(random_patterns_with_empty_rows_and_different_query_and_key_counts) {
  // Fewer queries than keys; rows 1 and 20 empty, row 5 masked by the bias (zero gradients); groups of one
  // row; columns shared between groups unowned, columns of a single entry owned.
  Shape shape = shape_of(1, 2, 32, 32, 2);
  shape.masked_row = 5;
  const BackwardProblem problem = make_problem(random_with_empty_rows(37, 53, 0.12, 7, {1, 20}), shape, 5);
  const PlanFacts facts = plan_facts(problem);
  CHECK(facts.owned > 0 && facts.unowned > 0 && facts.empty_rows == 2 && facts.shared_steps > 0);
  check_both(problem, run_with(3, 1));
  // More queries than keys, no bias, element-wise gathers.
  check_both(make_problem(random_with_empty_rows(53, 37, 0.3, 8, {0, 52}), shape_of(1, 2, 32, 32, 0), 6),
             run_with(2, 0, false));
}

TEST(groups_longer_than_a_step_and_wider_than_a_key_tile) {
  // Bias [1, nnz] shared by both heads, its gradient in one chunk: the wide groups' tiles read-modify-write
  // the partial sums over the set's two problems.
  const BackwardProblem problem = make_problem(wide_and_long_groups(), shape_of(1, 2, 32, 32, 1), 7);
  const PlanFacts facts = plan_facts(problem);
  CHECK(facts.widest_group == 130 && facts.longest_group == 70 && facts.owned_wide_columns == 230);
  CHECK(facts.unowned > 0 && facts.empty_rows == 2);
  check_both(problem, run_with(3, 1));
  // Bias [H, nnz] without its gradient, head dim 64 with value dim 32, element-wise gathers.
  check_both(make_problem(wide_and_long_groups(), shape_of(1, 2, 64, 32, 2), 8), run_with(2, 0, false));
}

TEST(head_dims) {
  const Csr pattern = spattn::patterns::swin(8, 8, 4, 2);
  // Multiples of 8 (cp.async): 64; 128 with a narrower value dim; 24 and 40 (not multiples of 16).
  check_both(make_problem(pattern, shape_of(1, 2, 64, 64, 2), 9), run_with(3, 1));
  CHECK(backward_matches<__nv_bfloat16>(make_problem(pattern, shape_of(1, 1, 128, 64, 1), 10), run_with(2, 1)));
  CHECK(backward_matches<__half>(make_problem(pattern, shape_of(1, 1, 128, 128, 0), 11), run_with(2, 0)));
  check_both(make_problem(pattern, shape_of(1, 2, 24, 40, 2), 12), run_with(3, 1));
  // The same dims element by element; not multiples of 8 (odd: single stores of dQ, dK and dV).
  check_both(make_problem(pattern, shape_of(1, 2, 40, 24, 0), 13), run_with(3, 0, false));
  CHECK(backward_matches<__half>(make_problem(pattern, shape_of(1, 2, 24, 40, 1), 14), run_with(3, 1, false)));
  check_both(make_problem(pattern, shape_of(1, 2, 17, 9, 2), 15), run_with(3, 1, false));
}

TEST(bias_gradient_over_chunks_of_problems) {
  // Bias [1, nnz], five problems: in four chunks of two problems the last chunk has none (its slice all
  // zeros); in three chunks the last is partial. Bias [H, nnz] with 3 images: two chunks per head.
  const Csr pattern = spattn::patterns::swin(8, 8, 4, 2);
  const BackwardProblem one_head = make_problem(pattern, shape_of(5, 1, 32, 32, 1), 16);
  CHECK(backward_matches<__half>(one_head, run_with(3, 4)));
  CHECK(backward_matches<__nv_bfloat16>(one_head, run_with(2, 3)));
  const BackwardProblem per_head = make_problem(pattern, shape_of(3, 2, 32, 32, 2), 17);
  CHECK(backward_matches<__nv_bfloat16>(per_head, run_with(3, 2)));
  CHECK(backward_matches<__half>(per_head, run_with(2, 3)));
}

TEST(masked_rows_and_nan_query_rows) {
  // Shifted windows: row 60 masked in every bias head (zero gradients, no NaN); a NaN in the query of row 0
  // of problem 0 and row 100 of problem 3: NaN exactly where it reaches, the other rows and problems exact.
  Shape shape = shape_of(2, 2, 32, 32, 2);
  shape.masked_row = 60;
  const auto edit = [](const Csr& pattern, Inputs& in) {
    nan_query(0, 0)(pattern, in);
    nan_query(3, 100)(pattern, in);
  };
  const BackwardProblem problem = make_problem(spattn::patterns::swin(14, 14, 7, 3), shape, 18, edit);
  CHECK(backward_matches<__half>(problem, run_with(3, 1)));
  CHECK(backward_matches<__nv_bfloat16>(problem, run_with(2, 0)));
}

TEST(strided_operands_of_one_projection) {
  // q, k, v in place in a [B, N, 3, H, D] projection, out and grad_out in [B, N, H, D] order, cp.async.
  const BackwardProblem problem = make_problem(spattn::patterns::swin(14, 14, 7, 3), shape_of(2, 2, 32, 32, 2), 19);
  Run run = run_with(3, 1);
  run.strided = true;
  check_both(problem, run);
  // Element-wise gathers; D = 20 (rows of the projection not 16-byte aligned), no bias gradient.
  run.async = false, run.chunks = 0;
  CHECK(backward_matches<__half>(problem, run));
  CHECK(backward_matches<__nv_bfloat16>(
      make_problem(spattn::patterns::swin(8, 8, 4, 2), shape_of(1, 2, 20, 20, 1), 20), run));
}

TEST(a_gradient_reaching_lse) {
  // grad_lse folds into delta: shifted windows with a bias [H, nnz] and its gradient; a random pattern with
  // empty rows and a masked row (their delta is -grad_lse, their gradients zero), element-wise gathers.
  Shape shape = shape_of(2, 2, 32, 32, 2);
  shape.grad_lse = true;
  check_both(make_problem(spattn::patterns::swin(14, 14, 7, 3), shape, 24), run_with(3, 1));
  shape = shape_of(1, 2, 24, 40, 2);
  shape.grad_lse = true, shape.masked_row = 5;
  check_both(make_problem(random_with_empty_rows(37, 53, 0.12, 7, {1, 20}), shape, 25), run_with(2, 1, false));
}

TEST(grouped_query_heads_and_a_bias_per_problem) {
  // 4 query heads over 2 k/v heads on shifted windows, a bias per problem ([B, H, nnz]) with its gradient
  // (each problem its own slice: one chunk) and grad_lse: dK and dV summed over each k/v head's two query heads.
  Shape shape = shape_of(2, 4, 32, 32, 8, 2);
  shape.grad_lse = true;
  const BackwardProblem shifted = make_problem(spattn::patterns::swin(14, 14, 7, 3), shape, 26);
  check_both(shifted, run_with(3, 1));
  // MQA (4 query heads, one k/v head), wide and long groups (owned columns over several key tiles, unowned
  // ones left untouched), bias [1, nnz] over two chunks, head dim 64 with value dim 32, element-wise gathers.
  check_both(make_problem(wide_and_long_groups(), shape_of(1, 4, 64, 32, 1, 4), 27), run_with(3, 2, false));
  // A random pattern with empty rows, Nq != Nk, odd dims, bias [H, nnz] without its gradient.
  check_both(make_problem(random_with_empty_rows(37, 53, 0.12, 7, {1, 20}), shape_of(1, 4, 17, 9, 4, 2), 28),
             run_with(2, 0, false));
  // Views of one [B, N, H + 2 Hkv, D] projection (cp.async), out and grad_out in [B, N, H, D] order.
  Run run = run_with(3, 1);
  run.strided = true;
  check_both(make_problem(spattn::patterns::swin(8, 8, 4, 2), shape_of(2, 4, 32, 32, 8, 2), 29), run);
  // Head dims 128 and 96: dK and dV reduced in two passes of 64 dims each, their partials at both offsets.
  CHECK(backward_matches<__half>(make_problem(spattn::patterns::swin(8, 8, 4, 2), shape_of(1, 2, 128, 96, 2, 2), 34),
                                 run_with(2, 1)));
}

TEST(the_whole_backward_as_the_launcher_runs_it) {
  // The SIMT passes too (attention_backward_passes.cuh), with the schedule (the tensor-core kernel, then the
  // column pass over the unowned columns and the bias gradient's final sum) and without a plan (row pass,
  // column pass, final sum): every column's dK and dV and grad_bias against the reference, under grouped-query
  // attention (the column pass walks each k/v problem's query problems) with grad_lse (the row pass folds it
  // into delta). The emulated SIMT passes cost most of this test's time (their shuffles are barriers between
  // threads), so each path runs in one dtype: float16 with the schedule, bfloat16 without a plan.
  for (const Path path : {Path::with_schedule, Path::without_plan}) {
    const auto matches = [path](const BackwardProblem& problem, const Run& run) {
      return path == Path::with_schedule ? backward_matches<__half>(problem, run)
                                         : backward_matches<__nv_bfloat16>(problem, run);
    };
    Run run = run_with(3, 1);
    run.path = path;
    // Shared columns (unowned), empty rows and a masked row; 2 query heads per k/v head, bias [H, nnz].
    Shape shape = shape_of(1, 4, 32, 32, 4, 2);
    shape.grad_lse = true, shape.masked_row = 5;
    CHECK(matches(make_problem(random_with_empty_rows(37, 53, 0.12, 7, {1, 20}), shape, 31), run));
    // MQA over wide and long groups (the 70-row group's columns unowned), bias [1, nnz] in 2 chunks.
    run.chunks = 2, run.async = false;
    shape = shape_of(1, 4, 24, 40, 1, 4);
    shape.grad_lse = true;
    CHECK(matches(make_problem(wide_and_long_groups(), shape, 32), run));
    // A bias per problem, odd dims, no grouping.
    run.chunks = 1;
    CHECK(matches(make_problem(spattn::patterns::swin(8, 8, 4, 2), shape_of(2, 2, 17, 9, 4), 33), run));
  }
}

TEST(deterministic) {
  // Two runs bitwise equal, and runs on other grids too (each output comes from one item, in a fixed order):
  // 3 blocks, 1 block, and more blocks than items (the extra ones return at once).
  const BackwardProblem problem = make_problem(wide_and_long_groups(), shape_of(2, 1, 32, 32, 1), 21);
  const unsigned items = static_cast<unsigned>(problem.plan.step_count() * 2);  // two sets: one bias head, 2 chunks
  const auto same = [](const Outputs<__nv_bfloat16>& a, const Outputs<__nv_bfloat16>& b) {
    const auto equal = [](const auto& x, const auto& y) {
      return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * sizeof(x[0])) == 0;
    };
    return equal(a.grad_q, b.grad_q) && equal(a.grad_k, b.grad_k) && equal(a.grad_v, b.grad_v) &&
           equal(a.delta, b.delta) && equal(a.bias_sums, b.bias_sums);
  };
  const Outputs<__nv_bfloat16> first = run_backward<__nv_bfloat16>(problem, run_with(2, 2));
  CHECK(outputs_match(problem, first, true));
  CHECK(same(first, run_backward<__nv_bfloat16>(problem, run_with(2, 2))));
  for (unsigned blocks : {3u, 1u, items + 2}) {
    CHECK(same(first, run_backward<__nv_bfloat16>(problem, run_with(blocks, 2))));
  }
}

TEST(mutations_make_the_comparison_fail) {
  // Shifted windows (shared steps) and wide groups (several key tiles): the unmutated kernel passes, a
  // swapped A register in mma and a missing wait for the stage each fail.
  const BackwardProblem shifted = make_problem(spattn::patterns::swin(14, 14, 7, 3), shape_of(1, 2, 32, 32, 2), 22);
  const BackwardProblem wide = make_problem(wide_and_long_groups(), shape_of(1, 1, 32, 32, 1), 23);
  for (const BackwardProblem* problem : {&shifted, &wide}) {
    CHECK(backward_matches<__half>(*problem, run_with(3, 1)));
    CHECK(!backward_matches<SwappedHalf>(*problem, run_with(3, 1), /*report=*/false));
    skip_stage_wait = true;
    CHECK(!backward_matches<__half>(*problem, run_with(3, 1), /*report=*/false));
    skip_stage_wait = false;
  }
  // grad_lse not passed to the kernel, and grouped-query attention read as MQA, each fail.
  Shape shape = shape_of(1, 4, 32, 32, 4, 2);
  shape.grad_lse = true;
  const BackwardProblem grouped = make_problem(spattn::patterns::swin(8, 8, 4, 2), shape, 30);
  CHECK(backward_matches<__half>(grouped, run_with(3, 1)));
  Run run = run_with(3, 1);
  run.drop_grad_lse = true;
  CHECK(!backward_matches<__half>(grouped, run, /*report=*/false));
  run.drop_grad_lse = false, run.wrong_head_group = 4;
  CHECK(!backward_matches<__half>(grouped, run, /*report=*/false));
  // The same in the SIMT passes (row pass: grad_lse; column pass: the k/v problems' query heads).
  run = run_with(3, 1);
  run.path = Path::without_plan;
  CHECK(backward_matches<__half>(grouped, run));
  run.drop_grad_lse = true;
  CHECK(!backward_matches<__half>(grouped, run, /*report=*/false));
  run.drop_grad_lse = false, run.wrong_head_group = 4;
  CHECK(!backward_matches<__half>(grouped, run, /*report=*/false));
}

TEST_MAIN()

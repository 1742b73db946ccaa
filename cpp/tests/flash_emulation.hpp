#pragma once
// What the emulated tests of the register-resident tensor-core kernels share (test_cuda_emulated_flash.cpp,
// the forward; test_cuda_emulated_flash_backward.cpp, the backward): the mutation hooks, the storage types
// with their poison and tolerances, problems with their plan and float64 reference, the operands laid out
// as a run asks, the argument fields and the cp.async rule as the launchers have them, and the comparison.
//
// Include it after cuda_emulation.hpp and the kernel's header: the hooks specialise the emulated primitives
// before the test instantiates the kernel, so the kernel runs unmodified.

#include "attention_reference.hpp"
#include "flash_step.cuh"
#include "launcher_arguments.cuh"
#include "warp_primitives.cuh"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

// ---- mutation hooks -------------------------------------------------------------------------------------
namespace flash_emulation {
// When set, the kernel's wait for its current stage (cp_async_wait<1>) does nothing: the "missing wait"
// mutation. The stage's bytes then stay as the emulated cp.async leaves them at issue (NaN) when read.
inline bool skip_stage_wait = false;
}  // namespace flash_emulation

namespace spattn::cuda::detail {

// The emulation's cp_async_wait<1> (cuda/warp_primitives.cuh: the same body, keep them alike) with the
// mutation switch; declared before the kernel is instantiated, so the kernel of the test calls it.
template <>
inline void cp_async_wait<1>() {
  spattn_emulation::maybe_yield();
  if (flash_emulation::skip_stage_wait) return;
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

namespace flash_emulation {

using spattn::AttentionDims;
using spattn::AttentionLayouts;
using spattn::Csr;
using spattn::index_t;
using spattn::OperandLayout;
using spattn::testing::Inputs;
using spattn::testing::make_inputs;
using spattn::testing::negative_infinity;
using spattn::testing::Reference;
using spattn::testing::Shape;
namespace kernels = spattn::cuda::detail;
using kernels::SwappedHalf;

// ---- storage types ---------------------------------------------------------------------------------------
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
inline std::uint32_t float_bits(float x) {
  std::uint32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  return bits;
}
inline float float_from_bits(std::uint32_t bits) {
  float x;
  std::memcpy(&x, &bits, sizeof(x));
  return x;
}

template <typename D>
double tolerance() {
  return std::is_same_v<D, __nv_bfloat16> ? 3e-2 : 1e-2;
}

// What the buffers hold where the kernel must not write or has not written yet (NaNs no conversion
// produces): 16-bit elements and floats (lse, delta, the bias partial sums).
constexpr std::uint16_t kPoison = 0xffff;
constexpr std::uint32_t kPoisonFloat = 0x7fbadbad;

// A poisoned element reads as +inf (no expected value is infinite), so that it never passes, not even for an
// expected NaN.
template <typename D>
double written_value(D x) {
  return bits_of(x) == kPoison ? std::numeric_limits<double>::infinity() : to_double(x);
}
inline double written_value(float x) {
  return float_bits(x) == kPoisonFloat ? std::numeric_limits<double>::infinity() : x;
}

// ---- problems ----------------------------------------------------------------------------------------------
struct Problem {
  Csr pattern;
  spattn::ExecutionPlan plan;
  Inputs inputs;
  Reference expected;
  double scale = 1;
};

using Edit = std::function<void(const Csr&, Inputs&)>;

// The inputs of `shape` on `pattern`, edited by `edit` (NaN queries, -inf bias entries), the pattern's plan and
// the float64 reference. The reference drops a row whose query has a NaN; each test writes its kernel's
// contract for such rows into `expected` (for_each_nan_query_row).
inline Problem make_reference_problem(Csr pattern, const Shape& shape, unsigned seed, const Edit& edit) {
  Problem problem{std::move(pattern), {}, {}, {}, 1};
  problem.plan = spattn::build_plan(problem.pattern.view());
  problem.inputs = make_inputs(problem.pattern, shape, seed);
  if (edit) edit(problem.pattern, problem.inputs);
  problem.scale = 1 / std::sqrt(static_cast<double>(shape.head_dim));
  problem.expected = spattn::testing::reference_attention(problem.pattern, problem.inputs, problem.scale);
  return problem;
}

// Calls nan_row(p, r) for each non-empty row r of problem p with a NaN query element.
template <typename NanRow>
void for_each_nan_query_row(const Problem& problem, const NanRow& nan_row) {
  const AttentionDims& dims = problem.inputs.dims;
  const index_t rows = problem.pattern.rows();
  for (index_t p = 0; p < dims.batch; ++p) {
    for (index_t r = 0; r < rows; ++r) {
      if (problem.pattern.view().row_length(r) == 0) continue;
      bool nan_query = false;
      for (index_t d = 0; d < dims.head_dim; ++d) {
        nan_query |= std::isnan(problem.inputs.q[(p * rows + r) * dims.head_dim + d]);
      }
      if (nan_query) nan_row(p, r);
    }
  }
}

// An edit: query row `row` of problem `problem` gets a NaN.
inline Edit nan_query(index_t problem, index_t row) {
  return [=](const Csr& pattern, Inputs& in) { in.q[(problem * pattern.rows() + row) * in.dims.head_dim] = NAN; };
}

// Facts about a plan's schedule that the cases claim to cover.
struct ScheduleFacts {
  index_t steps = 0, shared_steps = 0, widest_group = 0, longest_group = 0;
};
inline ScheduleFacts schedule_facts(const Problem& problem) {
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

// bias_heads: 0 (none), 1, heads or images * heads (a [B, H, nnz] bias); head_group: query heads per k/v head.
inline Shape shape_of(index_t images, index_t heads, index_t head_dim, index_t value_dim, index_t bias_heads,
                      index_t head_group = 1) {
  Shape shape;
  shape.images = images, shape.heads = heads, shape.head_dim = head_dim, shape.value_dim = value_dim;
  shape.bias_heads = bias_heads, shape.head_group = head_group;
  return shape;
}

// ---- patterns ------------------------------------------------------------------------------------------
inline Csr from_mask(index_t rows, index_t cols, const std::function<bool(index_t, index_t)>& keep) {
  std::vector<std::uint8_t> mask(rows * cols);
  for (index_t r = 0; r < rows; ++r) {
    for (index_t c = 0; c < cols; ++c) mask[r * cols + c] = keep(r, c) ? 1 : 0;
  }
  return Csr::from_dense(mask.data(), rows, cols);
}

inline bool in_row(const Csr& pattern, index_t r, index_t c) {
  const auto begin = pattern.col_indices().begin() + pattern.row_offsets()[r];
  const auto end = pattern.col_indices().begin() + pattern.row_offsets()[r + 1];
  return std::binary_search(begin, end, c);
}

// A random pattern with rows `empty` emptied.
inline Csr random_with_empty_rows(index_t rows, index_t cols, double density, std::uint64_t seed,
                                  const std::vector<index_t>& empty) {
  const Csr random = spattn::patterns::random(rows, cols, density, seed);
  return from_mask(rows, cols, [&](index_t r, index_t c) {
    return std::find(empty.begin(), empty.end(), r) == empty.end() && in_row(random, r, c);
  });
}

// ---- operands ------------------------------------------------------------------------------------------
// [batch / layout.head_group, n, dim] values in storage type D, written at `base` (inside `buffer`) through
// `layout` (k/v problem p is read by query problems p * head_group ..).
template <typename D>
void place(std::vector<D>& buffer, const D* base, const OperandLayout& layout, const std::vector<double>& values,
           const AttentionDims& dims, index_t n, index_t dim) {
  for (index_t p = 0; p < dims.batch / layout.head_group; ++p) {
    for (index_t i = 0; i < n; ++i) {
      for (index_t e = 0; e < dim; ++e) {
        const index_t at = (base - buffer.data()) + layout.problem_offset(p * layout.head_group, dims.heads) +
                           i * layout.row_stride + e;
        buffer[at] = to_storage<D>(values[(p * n + i) * dim + e]);
      }
    }
  }
}

// q, k, v and the bias of a problem in storage type D: contiguous, or (`strided`) q, k and v as views of one
// [B, N, H + 2 Hkv, D] projection ([B, N, 3, H, D] without grouped-query attention); and where out's rows go:
// contiguous with `out_gap` elements after each row, or in [B, N, H, Dv] order beside a projection. k and v
// have Hkv = H / head_group heads. Not copyable: q, k, v and bias point into its buffers.
template <typename D>
struct Operands {
  std::vector<D> q_buffer, k_buffer, v_buffer, qkv, bias_buffer;
  OperandLayout q_layout, k_layout, v_layout, out_layout;
  const D *q = nullptr, *k = nullptr, *v = nullptr, *bias = nullptr;
  bool valid = true;  // false: the case asked for a projection its sizes do not allow

  Operands(const Problem& problem, bool strided, index_t out_gap = 0) {
    const Inputs& in = problem.inputs;
    const AttentionDims& dims = in.dims;
    const index_t rows = problem.pattern.rows(), cols = problem.pattern.cols(), heads = dims.heads;
    const index_t group = dims.head_group, kv_heads = heads / group;
    const index_t head_dim = dims.head_dim, value_dim = dims.value_dim;
    if (strided) {
      if (rows != cols || head_dim != value_dim) {
        std::printf("  test error: a [B, N, 3, H, D] projection needs rows == cols and head_dim == value_dim\n");
        valid = false;
        return;
      }
      const index_t n = rows, d = head_dim, width = heads + 2 * kv_heads;
      qkv.assign(dims.batch / heads * n * width * d, from_bits<D>(kPoison));
      q_layout = {n * width * d, d, width * d};
      k_layout = v_layout = {n * width * d, d, width * d, group};
      q = qkv.data();
      k = qkv.data() + heads * d;
      v = qkv.data() + (heads + kv_heads) * d;
      place(qkv, q, q_layout, in.q, dims, n, d);
      place(qkv, k, k_layout, in.k, dims, n, d);
      place(qkv, v, v_layout, in.v, dims, n, d);
      out_layout = {n * heads * value_dim, value_dim, heads * value_dim};
    } else {
      q_layout = OperandLayout::contiguous(heads, rows, head_dim);
      k_layout = OperandLayout::contiguous(heads, cols, head_dim, group);
      v_layout = OperandLayout::contiguous(heads, cols, value_dim, group);
      out_layout = OperandLayout::contiguous(heads, rows, value_dim + out_gap);
      q_buffer.resize(in.q.size()), k_buffer.resize(in.k.size()), v_buffer.resize(in.v.size());
      place(q_buffer, q_buffer.data(), q_layout, in.q, dims, rows, head_dim);
      place(k_buffer, k_buffer.data(), k_layout, in.k, dims, cols, head_dim);
      place(v_buffer, v_buffer.data(), v_layout, in.v, dims, cols, value_dim);
      q = q_buffer.data(), k = k_buffer.data(), v = v_buffer.data();
    }
    if (dims.bias_heads > 0) {
      for (double x : in.bias) bias_buffer.push_back(to_storage<D>(x));
      bias = bias_buffer.data();
    }
  }
  Operands(const Operands&) = delete;
  Operands& operator=(const Operands&) = delete;
};

// Whether the launchers (cuda/attention_*_flash.cu) would gather q, k, v and the bias with cp.async: their own
// test, so that a case cannot ask for a path the launcher would not take.
template <typename D>
bool gathers_aligned(const Operands<D>& operands, const AttentionDims& dims) {
  return kernels::rows_copyable(operands.q, operands.q_layout, dims.head_dim) &&
         kernels::rows_copyable(operands.k, operands.k_layout, dims.head_dim) &&
         kernels::rows_copyable(operands.v, operands.v_layout, dims.value_dim) &&
         (operands.bias == nullptr || kernels::aligned_16(operands.bias));
}

// ---- one run of a kernel ---------------------------------------------------------------------------------
// The fields both kernels' argument blocks take from the problem and its operands, as the launchers fill
// them; each test sets out, lse and the rest.
template <typename Arguments, typename D>
void fill_problem_arguments(Arguments& args, const Problem& problem, const Operands<D>& operands) {
  const AttentionLayouts layouts{operands.q_layout, operands.k_layout, operands.v_layout, operands.out_layout,
                                 operands.out_layout};
  kernels::fill_shared_arguments(args, problem.pattern.view(), operands.q, operands.k, operands.v, operands.bias,
                                 problem.inputs.dims, layouts, problem.scale);
  args.groups = problem.plan.groups();
  args.group_offsets = problem.plan.group_offsets.data();
  args.group_rows = problem.plan.group_rows.data();
  args.step_count = problem.plan.step_count();
  args.steps = problem.plan.steps.data();
}

// Calls launch(std::integral_constant<int, kMaxDim>{}) with the kernels' kMaxDim for the wider of the two
// dims, as the launchers choose it: 32, 64 or 128.
template <typename Launch>
void with_max_dim(index_t head_dim, index_t value_dim, const Launch& launch) {
  const index_t widest = std::max(head_dim, value_dim);
  if (widest <= 32) {
    launch(std::integral_constant<int, 32>{});
  } else if (widest <= 64) {
    launch(std::integral_constant<int, 64>{});
  } else {
    launch(std::integral_constant<int, 128>{});
  }
}

// Relative to the largest finite expected magnitude (at least 1); infinities matched exactly; an expected
// NaN needs a NaN (a poisoned element, read as +inf, fails). Prints up to 5 mismatches, naming them through
// `where`, when `report`.
inline bool matches(const std::vector<double>& actual, const std::vector<double>& expected, double tolerance,
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

}  // namespace flash_emulation

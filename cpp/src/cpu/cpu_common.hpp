#pragma once
// Internal to the CPU kernels: bfloat16 <-> float conversion, the vectorisable inner loops every kernel
// shares, and the OpenMP loop that hands out (problem, row) work items.
//
// Inner loops run over a contiguous head-dim row and carry `#pragma omp simd`: without -ffast-math the
// compiler may not reorder a floating-point reduction on its own, and the pragma is what licenses the
// vectorised sum. Values are loaded through `load` so that one loop serves float, double and bfloat16.

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

#include "spattn/kernels.hpp"

namespace spattn::cpu::detail {

// ---- element conversion --------------------------------------------------------------------------------
inline float load(bfloat16 value) {
  const std::uint32_t bits = static_cast<std::uint32_t>(value.bits) << 16;
  float result;
  std::memcpy(&result, &bits, sizeof(result));
  return result;
}
inline float load(float value) { return value; }
inline double load(double value) { return value; }

// Round to nearest even, as torch does; NaN stays a (quiet) NaN instead of rounding into infinity.
inline bfloat16 to_bfloat16(float value) {
  std::uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  if ((bits & 0x7fffffffu) > 0x7f800000u) return bfloat16{static_cast<std::uint16_t>((bits >> 16) | 0x0040u)};
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return bfloat16{static_cast<std::uint16_t>(bits >> 16)};
}

template <typename T>
inline T store(accumulate_t<T> value) {
  if constexpr (std::is_same_v<T, bfloat16>) {
    return to_bfloat16(value);
  } else {
    return static_cast<T>(value);
  }
}

template <typename T>
inline constexpr accumulate_t<T> negative_infinity = -std::numeric_limits<accumulate_t<T>>::infinity();

// ---- exponential ---------------------------------------------------------------------------------------
// Softmax weights exp(values[i] - shift), written in place; returns their sum. The exponentials cost as much
// as the dot products, and GCC keeps a loop over std::exp scalar (an inline polynomial too: its clamps stay
// branches), so float goes through GCC/Clang vector extensions, 8 lanes at a time, compiled for whatever
// the enclosing function targets. Double keeps std::exp, whose accuracy the float64 tests (1e-10) need.
// These helpers are always inlined: an out-of-line copy is compiled once, for the baseline target, and the
// AVX2 copies of the kernels calling it ran their exponentials as SSE code (a fifth of the backward's time).
// The 8-lane helpers never cross an ABI boundary, so GCC's note that 32-byte vectors are passed differently
// with and without AVX does not apply. (GCC reports it at the end of the file, so the diagnostic stays off
// for the rest of the file rather than being popped.)
#pragma GCC diagnostic ignored "-Wpsabi"
#define SPATTN_ALWAYS_INLINE inline __attribute__((always_inline))
using float8 = float __attribute__((vector_size(32)));
using int8 = std::int32_t __attribute__((vector_size(32)));

// exp(x) on 8 lanes for the inputs a softmax weight has: x <= 0 (a score minus its row's maximum or
// log-sum-exp; rounding may make it a few ulps positive), -inf (a masked entry: weight 0) or NaN (passed
// through). Range reduction by ln 2 in two parts, the power of two rounded to nearest by adding 1.5 * 2^23
// (two additions instead of two conversions and a correction), then 1 + r + r^2 p(r) with p of degree 3
// fitted for the least relative error on |r| <= ln 2 / 2: worst relative error 1.9e-7 against std::exp on
// [-87, 0]. No clamps: such inputs never need them. Below -87: 0.
SPATTN_ALWAYS_INLINE float8 weight_exp(float8 x) {
  using uint8 = std::uint32_t __attribute__((vector_size(32)));
  const float8 zero = {};
  const float8 shifter = zero + 12582912.0f;  // 1.5 * 2^23: its ulp is 1
  const float8 shifted = x * 1.44269504088896341f + shifter;  // bits: those of 1.5 * 2^23, plus n
  const float8 whole = shifted - shifter;
  const float8 r = x - whole * 0.693359375f + whole * 2.12194440e-4f;  // x - n ln 2, in two parts
  float8 p = zero + 8.312525227665901e-3f;
  p = p * r + 4.1890114545822144e-2f;
  p = p * r + 1.6667114198207855e-1f;
  p = p * r + 4.99992311000824e-1f;
  p = p * r * r + r + 1.0f;
  uint8 bits;
  std::memcpy(&bits, &shifted, sizeof(bits));
  bits = (bits + 127u) << 23;  // 2^n: the exponent field; the bits of 1.5 * 2^23 shift out
  float8 power;
  std::memcpy(&power, &bits, sizeof(power));
  return x < -87.0f ? zero : p * power;
}

// values[i] <= shift for every i (shift is the row's maximum, or its log-sum-exp).
SPATTN_ALWAYS_INLINE float exp_in_place(float* values, index_t count, float shift) {
  float8 sum = {};
  index_t i = 0;
  for (; i + 8 <= count; i += 8) {
    float8 chunk;
    std::memcpy(&chunk, values + i, sizeof(chunk));
    chunk = weight_exp(chunk - shift);
    std::memcpy(values + i, &chunk, sizeof(chunk));
    sum += chunk;
  }
  if (i < count) {  // the tail, padded with -inf (weight 0)
    float8 chunk = {};
    chunk -= std::numeric_limits<float>::infinity();
    std::memcpy(&chunk, values + i, sizeof(float) * (count - i));
    chunk = weight_exp(chunk - shift);
    std::memcpy(values + i, &chunk, sizeof(float) * (count - i));
    sum += chunk;
  }
  float total = 0;
  for (int lane = 0; lane < 8; ++lane) total += sum[lane];
  return total;
}

SPATTN_ALWAYS_INLINE double exp_in_place(double* values, index_t count, double shift) {
  double total = 0;
  for (index_t i = 0; i < count; ++i) total += values[i] = std::exp(values[i] - shift);
  return total;
}

// ---- inner loops over one contiguous row ---------------------------------------------------------------
// sum_d x[d] * y[d]
template <typename X, typename Y>
inline auto dot(const X* x, const Y* y, index_t n) {
  using Acc = decltype(load(*x) * load(*y));
  Acc sum = 0;
#pragma omp simd reduction(+ : sum)
  for (index_t d = 0; d < n; ++d) sum += load(x[d]) * load(y[d]);
  return sum;
}

// y[d] += alpha * x[d]
template <typename Acc, typename X>
inline void axpy(Acc* y, Acc alpha, const X* x, index_t n) {
#pragma omp simd
  for (index_t d = 0; d < n; ++d) y[d] += alpha * load(x[d]);
}

// Four dot products sharing x: four independent sums keep the vector units busy where one sum would wait
// on its own latency (head dims are short, 32 or 64), and x is loaded once for all four.
template <typename X, typename Y, typename Acc>
inline void dot4(const X* x, const Y* y0, const Y* y1, const Y* y2, const Y* y3, index_t n, Acc* out) {
  Acc s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
  for (index_t d = 0; d < n; ++d) {
    const Acc xd = load(x[d]);
    s0 += xd * load(y0[d]);
    s1 += xd * load(y1[d]);
    s2 += xd * load(y2[d]);
    s3 += xd * load(y3[d]);
  }
  out[0] = s0, out[1] = s1, out[2] = s2, out[3] = s3;
}

// y[d] += sum_j alpha[j] * x_j[d] for four rows: y is loaded and stored once instead of four times.
template <typename Acc, typename X>
inline void axpy4(Acc* y, const Acc* alpha, const X* x0, const X* x1, const X* x2, const X* x3, index_t n) {
  const Acc a0 = alpha[0], a1 = alpha[1], a2 = alpha[2], a3 = alpha[3];
#pragma omp simd
  for (index_t d = 0; d < n; ++d) {
    y[d] += a0 * load(x0[d]) + a1 * load(x1[d]) + a2 * load(x2[d]) + a3 * load(x3[d]);
  }
}

// dot4 for two x rows at once (two query rows sharing their keys): each y row is loaded once for both.
template <typename Acc, typename Y>
inline void dot4x2(const Acc* x0, const Acc* x1, const Y* y0, const Y* y1, const Y* y2, const Y* y3, index_t n,
                   Acc* out0, Acc* out1) {
  Acc s00 = 0, s01 = 0, s02 = 0, s03 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0;
#pragma omp simd reduction(+ : s00, s01, s02, s03, s10, s11, s12, s13)
  for (index_t d = 0; d < n; ++d) {
    const Acc a = x0[d], b = x1[d];
    const Acc k0 = load(y0[d]), k1 = load(y1[d]), k2 = load(y2[d]), k3 = load(y3[d]);
    s00 += a * k0, s01 += a * k1, s02 += a * k2, s03 += a * k3;
    s10 += b * k0, s11 += b * k1, s12 += b * k2, s13 += b * k3;
  }
  out0[0] = s00, out0[1] = s01, out0[2] = s02, out0[3] = s03;
  out1[0] = s10, out1[1] = s11, out1[2] = s12, out1[3] = s13;
}

// axpy4 into two y rows with their own weights, loading each x row once for both.
template <typename Acc, typename X>
inline void axpy4x2(Acc* y0, Acc* y1, const Acc* alpha0, const Acc* alpha1, const X* x0, const X* x1, const X* x2,
                    const X* x3, index_t n) {
  const Acc a0 = alpha0[0], a1 = alpha0[1], a2 = alpha0[2], a3 = alpha0[3];
  const Acc b0 = alpha1[0], b1 = alpha1[1], b2 = alpha1[2], b3 = alpha1[3];
#pragma omp simd
  for (index_t d = 0; d < n; ++d) {
    const Acc v0 = load(x0[d]), v1 = load(x1[d]), v2 = load(x2[d]), v3 = load(x3[d]);
    y0[d] += a0 * v0 + a1 * v1 + a2 * v2 + a3 * v3;
    y1[d] += b0 * v0 + b1 * v1 + b2 * v2 + b3 * v3;
  }
}

// dot4x2 for float rows whose length is a multiple of 8, on 8-lane vectors: the eight sums are reduced
// together by a shuffle tree (3 levels) instead of one horizontal sum each, which with head dims of 32
// would cost more than the multiply-adds themselves.
inline float8 load8(const float* x) {
  float8 result;
  std::memcpy(&result, x, sizeof(result));
  return result;
}

// One 32-byte store. (A memcpy from an array of vectors can go through the stack in 16-byte halves, and
// the 32-byte load that reads the result back then waits for both: a store-forwarding stall.)
SPATTN_ALWAYS_INLINE void store8(float* destination, float8 value) {
  using unaligned_float8 = float __attribute__((vector_size(32), aligned(4)));
  *reinterpret_cast<unaligned_float8*>(destination) = value;
}

// Transposes 8 rows of 8 in registers: three rounds of two-input shuffles (unpack, pair, half swaps).
SPATTN_ALWAYS_INLINE void transpose8x8(float8* x) {  // x: 8 vectors
  float8 t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = __builtin_shuffle(x[i], x[i + 1], int8{0, 8, 1, 9, 4, 12, 5, 13});
    t[i + 1] = __builtin_shuffle(x[i], x[i + 1], int8{2, 10, 3, 11, 6, 14, 7, 15});
  }
  for (int i = 0; i < 8; i += 4) {
    for (int h = 0; h < 2; ++h) {
      u[i + h] = __builtin_shuffle(t[i + h], t[i + 2 + h], int8{0, 1, 8, 9, 4, 5, 12, 13});
      u[i + 2 + h] = __builtin_shuffle(t[i + h], t[i + 2 + h], int8{2, 3, 10, 11, 6, 7, 14, 15});
    }
  }
  for (int i = 0; i < 4; ++i) {
    const int a = i % 2 * 2 + i / 2;  // u holds rows' dims in the order 0 2 1 3 within each half
    x[i] = __builtin_shuffle(u[a], u[a + 4], int8{0, 1, 2, 3, 8, 9, 10, 11});
    x[i + 4] = __builtin_shuffle(u[a], u[a + 4], int8{4, 5, 6, 7, 12, 13, 14, 15});
  }
}

inline float8 pairwise_sums(float8 a, float8 b) {  // hadd: [a0+a1, a2+a3, b0+b1, b2+b3 | same for 4..7]
  return __builtin_shuffle(a, b, int8{0, 2, 8, 10, 4, 6, 12, 14}) +
         __builtin_shuffle(a, b, int8{1, 3, 9, 11, 5, 7, 13, 15});
}

inline void dot4x2_by8(const float* x0, const float* x1, const float* y0, const float* y1, const float* y2,
                       const float* y3, index_t n, float* out0, float* out1) {
  float8 s0 = {}, s1 = {}, s2 = {}, s3 = {}, s4 = {}, s5 = {}, s6 = {}, s7 = {};
  for (index_t d = 0; d < n; d += 8) {
    const float8 a = load8(x0 + d), b = load8(x1 + d);
    const float8 k0 = load8(y0 + d), k1 = load8(y1 + d), k2 = load8(y2 + d), k3 = load8(y3 + d);
    s0 += a * k0, s1 += a * k1, s2 += a * k2, s3 += a * k3;
    s4 += b * k0, s5 += b * k1, s6 += b * k2, s7 += b * k3;
  }
  const float8 first = pairwise_sums(pairwise_sums(s0, s1), pairwise_sums(s2, s3));   // 0123 | 0123
  const float8 second = pairwise_sums(pairwise_sums(s4, s5), pairwise_sums(s6, s7));  // 4567 | 4567
  const float8 sums = __builtin_shuffle(first, second, int8{0, 1, 2, 3, 8, 9, 10, 11}) +
                      __builtin_shuffle(first, second, int8{4, 5, 6, 7, 12, 13, 14, 15});
  for (int i = 0; i < 4; ++i) out0[i] = sums[i], out1[i] = sums[4 + i];
}

inline void dot4_by8(const float* x, const float* y0, const float* y1, const float* y2, const float* y3, index_t n,
                     float* out) {
  float8 s0 = {}, s1 = {}, s2 = {}, s3 = {};
  for (index_t d = 0; d < n; d += 8) {
    const float8 a = load8(x + d);
    s0 += a * load8(y0 + d), s1 += a * load8(y1 + d), s2 += a * load8(y2 + d), s3 += a * load8(y3 + d);
  }
  const float8 sums = pairwise_sums(pairwise_sums(s0, s1), pairwise_sums(s2, s3));  // 0123 | 0123
  for (int i = 0; i < 4; ++i) out[i] = sums[i] + sums[4 + i];
}

// dot4 through dot4_by8 when the types and a compile-time length allow it.
template <index_t FixedDim, typename X, typename Y, typename Acc>
inline void dot4_fixed(const X* x, const Y* y0, const Y* y1, const Y* y2, const Y* y3, index_t n, Acc* out) {
  if constexpr (std::is_same_v<X, float> && std::is_same_v<Y, float> && FixedDim > 0 && FixedDim % 8 == 0) {
    dot4_by8(x, y0, y1, y2, y3, n, out);
  } else {
    dot4(x, y0, y1, y2, y3, n, out);
  }
}

// out[d] = factor * x[d], converted to the storage type
template <typename T, typename Acc>
inline void store_row(T* out, const Acc* x, Acc factor, index_t n) {
#pragma omp simd
  for (index_t d = 0; d < n; ++d) out[d] = store<T>(factor * x[d]);
}

// x[d] = y[d] in the accumulation type (a bfloat16 row read many times is converted once)
template <typename Acc, typename T>
inline void load_row(Acc* x, const T* y, index_t n) {
#pragma omp simd
  for (index_t d = 0; d < n; ++d) x[d] = load(y[d]);
}

inline index_t round_up(index_t value, index_t multiple) { return (value + multiple - 1) / multiple * multiple; }

template <typename Acc>
inline void zero_row(Acc* x, index_t n) {
#pragma omp simd
  for (index_t d = 0; d < n; ++d) x[d] = Acc(0);
}

template <typename T>
inline void zero_output(T* out, index_t n) {
  for (index_t d = 0; d < n; ++d) out[d] = store<T>(accumulate_t<T>(0));
}

// ---- run-time instruction-set dispatch -----------------------------------------------------------------
// The fused kernels are compiled a second time for AVX2 + FMA (GCC on x86-64) and pick that copy when
// the CPU has it. Helpers above are inlined into either copy and vectorised for its target. GCC only: it
// applies `#pragma GCC target` to lambdas too; other compilers build the baseline copy alone.
// Why the kernels are .inc files included twice (attention_forward.cpp, attention_backward.cpp), inside the
// namespaces `baseline` and `avx2`, rather than templates in a header compiled by a second file with
// -mavx2 -mfma: the inline helpers and templates of this header (and of <algorithm>, <cmath>) would then be
// compiled once per file under different flags, and the linker keeps one copy of each at random (they are the
// same entity under the ODR), so the baseline path could end up calling an AVX2 copy and die with SIGILL on a
// CPU without AVX2. Here every copy of a kernel is a distinct function, and anything defined outside the
// pragma keeps the baseline target (it is only inlined into the AVX2 copies). The price is the include block
// repeated in the two files.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SPATTN_CPU_DISPATCH_AVX2 1
// SPATTN_CPU_BASELINE=1 in the environment forces the baseline copy (so tests cover both on one machine).
inline bool cpu_has_avx2_fma() {
  static const bool available = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                                std::getenv("SPATTN_CPU_BASELINE") == nullptr;
  return available;
}
#else
#define SPATTN_CPU_DISPATCH_AVX2 0
#endif

// Calls KERNEL<T, dim>(args...) with the head dim fixed at compile time for the common dims (32, 64) when
// head_dim == value_dim, else KERNEL<T, 0> (any dims): the short inner loops of a fixed dim unroll
// completely. Expects `dims` (AttentionDims) and the type `T` in scope.
#define SPATTN_DISPATCH_DIM(KERNEL, ...)                      \
  switch (dims.head_dim == dims.value_dim ? dims.head_dim : 0) { \
    case 32: return KERNEL<T, 32>(__VA_ARGS__);                  \
    case 64: return KERNEL<T, 64>(__VA_ARGS__);                  \
    default: return KERNEL<T, 0>(__VA_ARGS__);                   \
  }

// ---- parallel loops ------------------------------------------------------------------------------------
// Work items are (problem, row) pairs flattened as problem * rows + row, handed out dynamically in small
// chunks: rows differ in length, and dynamic scheduling balances them without a per-call sort (the kernel
// contract passes no precomputed row order). Every thread gets its own scratch buffer of `scratch_size`
// accumulators, allocated once per call and thread, never per row.
// Below this much work (in multiply-adds) starting threads costs more than it saves.
inline constexpr index_t min_parallel_work = 1 << 15;

template <typename Acc, typename Body>
void parallel_for(index_t count, index_t work_per_item, index_t scratch_size, const Body& body) {
  const bool parallel = count > 1 && count * (work_per_item + 1) >= min_parallel_work;
#pragma omp parallel if (parallel)
  {
    std::vector<Acc> scratch(static_cast<std::size_t>(scratch_size));
#pragma omp for schedule(dynamic, 16)
    for (index_t item = 0; item < count; ++item) body(item, scratch.data());
  }
}

// ---- grouped-query attention -----------------------------------------------------------------------------
// Query problem p = b * H + h reads k/v problem b * (H / g) + h / g (g = dims.head_group); the g query
// problems of one k/v problem are consecutive, from first_query_problem on. The backward sums dK and dV over
// them in that order, so results do not depend on scheduling.
inline index_t kv_problem(AttentionDims dims, index_t problem) {
  return problem / dims.heads * dims.kv_heads() + problem % dims.heads / dims.head_group;
}
inline index_t first_query_problem(AttentionDims dims, index_t kv_problem) {
  return kv_problem / dims.kv_heads() * dims.heads + kv_problem % dims.kv_heads() * dims.head_group;
}

// Average entries per row, the usual measure of how much work a row is.
inline index_t mean_row_length(CsrView pattern) {
  return pattern.rows == 0 ? 0 : pattern.nnz() / pattern.rows + 1;
}

// out[p, r] = sum over the entries e of row r of `walk` of values[p, value_position(e)] * x[p, col(e)]: SpMM
// when walking the pattern (value_position = nullptr: entries in CSR order), and the column reduction of
// SpMM's and SDDMM's gradients when walking the transposed pattern (value_position = its permutation back to
// CSR order). One writer per output row, so no atomics. values has nnz entries per problem; x has walk.cols
// rows and out walk.rows rows of `dim` per problem.
template <typename T>
void weighted_row_sums(CsrView walk, const index_t* value_position, const T* values, const T* x, T* out,
                       index_t batch, index_t dim) {
  using Acc = accumulate_t<T>;
  const index_t rows = walk.rows, x_rows = walk.cols, nnz = walk.nnz();
  parallel_for<Acc>(batch * rows, mean_row_length(walk) * dim, dim, [&](index_t item, Acc* sum) {
    const index_t problem = item / rows, row = item % rows;
    const T* values_problem = values + problem * nnz;
    const T* x_problem = x + problem * x_rows * dim;
    zero_row(sum, dim);
    for (index_t e = walk.row_offsets[row]; e < walk.row_offsets[row + 1]; ++e) {
      const index_t position = value_position == nullptr ? e : value_position[e];
      axpy(sum, load(values_problem[position]), x_problem + walk.col_indices[e] * dim, dim);
    }
    store_row(out + (problem * rows + row) * dim, sum, Acc(1), dim);
  });
}

}  // namespace spattn::cpu::detail

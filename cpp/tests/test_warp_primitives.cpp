// The warp-level primitives of cuda/warp_primitives.cuh, run on one warp through the CPU emulation, against
// the PTX ISA's per-lane layout tables (written out here once more, from the ISA, apart from the emulation's):
// mma m16n8k16 and m16n8k8 in float16 and bfloat16, ldmatrix x1/x2/x4 plain and .trans, cp.async (16 and 4
// bytes, zero-fill, commit and wait groups), pack2's rounding and the shuffles.
//
// Every value is exact in both input types and every sum exact in float, so results are compared for
// equality. Negative controls show that each comparison rejects a wrong layout (a register swapped, the
// other input type, the transposed or a plausible wrong lane mapping), and death tests (in a child process:
// the emulation aborts when a kernel breaks a rule) that the emulation's checks fire.

#include "cuda_emulation.hpp"  // first: it prepares the kernels' headers for the host compiler

#include "check.hpp"
#include "warp_primitives.cuh"

#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

namespace kernels = spattn::cuda::detail;

namespace {

constexpr unsigned kWarp = 32;

// ---- the ISA's fragment tables, for lane l: g = l / 4, t = l % 4 ----------------------------------------
struct Position {
  int row, col;
};
// A, m16 x k16: 16-bit element a_i (i = 0..7) in register i / 2, low half for even i.
Position a_m16k16(int lane, int i) {
  const int g = lane / 4, t = lane % 4;
  const bool lower_rows = i == 2 || i == 3 || i == 6 || i == 7;
  return {g + (lower_rows ? 8 : 0), t * 2 + (i & 1) + (i >= 4 ? 8 : 0)};
}
// A, m16 x k8: a_i, i = 0..3.
Position a_m16k8(int lane, int i) {
  const int g = lane / 4, t = lane % 4;
  return {g + (i >= 2 ? 8 : 0), t * 2 + (i & 1)};
}
// B, k16 x n8: b_i, i = 0..3.
Position b_k16n8(int lane, int i) {
  const int g = lane / 4, t = lane % 4;
  return {t * 2 + (i & 1) + (i >= 2 ? 8 : 0), g};
}
// B, k8 x n8: b_i, i = 0, 1.
Position b_k8n8(int lane, int i) {
  const int g = lane / 4, t = lane % 4;
  return {t * 2 + i, g};
}
// C and D, m16 x n8 floats: c_i, i = 0..3.
Position c_m16n8(int lane, int i) {
  const int g = lane / 4, t = lane % 4;
  return {g + (i >= 2 ? 8 : 0), t * 2 + (i & 1)};
}

template <typename D>
std::uint32_t bits_of(float x) {
  const D value = kernels::from_float<D>(x);
  std::uint16_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  return bits;
}
template <typename D>
using OtherInputType = std::conditional_t<std::is_same_v<D, __half>, __nv_bfloat16, __half>;

// ---- mma ----------------------------------------------------------------------------------------------
// What a kernel might get wrong when it builds its fragments.
enum class Fault { none, swapped_a_registers, swapped_b_halves, other_input_type };

// Runs mma_m16n8k{K}<D> on one warp, every lane building its fragments from A (16 x K), B (K x 8) and C
// (16 x 8) by the tables above, and counts the D elements, over all lanes, that differ from C + A B.
template <typename D, int K>
int mma_mismatches(Fault fault) {
  // Distinct values, multiples of 1/32 (A) and 1/16 (B) within [-4, 4): exact in float16 and bfloat16, and
  // every partial sum of products is exact in float, whatever the order.
  std::vector<float> a(16 * K), b(K * 8), c(16 * 8);
  for (int i = 0; i < 16 * K; ++i) a[i] = static_cast<float>(i - 8 * K) / 32;
  for (int i = 0; i < K * 8; ++i) b[i] = static_cast<float>(i - 4 * K) / 16;
  for (int i = 0; i < 16 * 8; ++i) c[i] = static_cast<float>(i) / 4 - 7;
  std::vector<double> expected(16 * 8);
  for (int row = 0; row < 16; ++row) {
    for (int col = 0; col < 8; ++col) {
      double sum = c[row * 8 + col];
      for (int k = 0; k < K; ++k) sum += static_cast<double>(a[row * K + k]) * b[k * 8 + col];
      expected[row * 8 + col] = sum;
    }
  }

  std::vector<float> d(kWarp * 4, std::numeric_limits<float>::quiet_NaN());
  const auto kernel = [&] {
    const int lane = static_cast<int>(threadIdx.x % 32);
    const auto encode = [&](float x) {
      return fault == Fault::other_input_type ? bits_of<OtherInputType<D>>(x) : bits_of<D>(x);
    };
    std::uint32_t a_registers[K / 4] = {}, b_registers[K / 8] = {};
    for (int i = 0; i < K / 2; ++i) {
      const Position p = K == 16 ? a_m16k16(lane, i) : a_m16k8(lane, i);
      a_registers[i / 2] |= encode(a[p.row * K + p.col]) << (i % 2 * 16);
    }
    for (int i = 0; i < K / 4; ++i) {
      const Position p = K == 16 ? b_k16n8(lane, i) : b_k8n8(lane, i);
      b_registers[i / 2] |= encode(b[p.row * 8 + p.col]) << (i % 2 * 16);
    }
    if (fault == Fault::swapped_a_registers) std::swap(a_registers[K / 8 - 1], a_registers[K / 8]);
    if (fault == Fault::swapped_b_halves) b_registers[0] = b_registers[0] >> 16 | b_registers[0] << 16;
    kernels::Accumulator accumulator;
    for (int i = 0; i < 4; ++i) {
      const Position p = c_m16n8(lane, i);
      accumulator.x[i] = c[p.row * 8 + p.col];
    }
    if constexpr (K == 16) {
      kernels::mma_m16n8k16<D>(accumulator, a_registers, b_registers);
    } else {
      kernels::mma_m16n8k8<D>(accumulator, a_registers, b_registers[0]);
    }
    for (int i = 0; i < 4; ++i) d[lane * 4 + i] = accumulator.x[i];
  };
  spattn_emulation::launch(kernel, 1, kWarp, 0);

  int mismatches = 0;
  for (int lane = 0; lane < static_cast<int>(kWarp); ++lane) {
    for (int i = 0; i < 4; ++i) {
      const Position p = c_m16n8(lane, i);
      mismatches += d[lane * 4 + i] != expected[p.row * 8 + p.col];
    }
  }
  return mismatches;
}

// ---- ldmatrix ----------------------------------------------------------------------------------------------
// 32 rows of 8 16-bit elements in shared memory, 48 bytes apart (16-byte aligned, not contiguous). Lane j
// names row 31 - j, so matrix i's row r is stored row 31 - 8 i - r: only the lanes' addresses place them.
constexpr int kRowStride = 24;  // elements
constexpr std::size_t kRowsBytes = 32 * kRowStride * sizeof(std::uint16_t);
std::uint16_t stored_element(int stored_row, int col) { return static_cast<std::uint16_t>(0x1000 + stored_row * 16 + col); }
std::uint16_t matrix_element(int matrix, int row, int col) { return stored_element(31 - 8 * matrix - row, col); }

// How lane l's register i is expected to be filled.
enum class Mapping { plain, transposed, wrong_columns };
std::uint32_t expected_register(int lane, int matrix, Mapping mapping) {
  const int g = lane / 4, t = lane % 4;
  std::uint32_t lo = 0, hi = 0;
  switch (mapping) {
    case Mapping::plain:  // row g, columns 2t, 2t + 1
      lo = matrix_element(matrix, g, 2 * t), hi = matrix_element(matrix, g, 2 * t + 1);
      break;
    case Mapping::transposed:  // of the transposed matrix: (2t, g) and (2t + 1, g)
      lo = matrix_element(matrix, 2 * t, g), hi = matrix_element(matrix, 2 * t + 1, g);
      break;
    case Mapping::wrong_columns:  // a plausible mistake: columns t and t + 4
      lo = matrix_element(matrix, g, t), hi = matrix_element(matrix, g, t + 4);
      break;
  }
  return lo | hi << 16;
}

// Each lane's registers after ldmatrix x{kMatrices} (.trans with kTransposed); lanes whose addresses the
// instruction does not use pass a null pointer, which it must ignore.
template <int kMatrices, bool kTransposed>
std::vector<std::uint32_t> run_ldmatrix() {
  std::vector<std::uint32_t> registers(kWarp * 4, 0);
  const auto kernel = [&] {
    SPATTN_DYNAMIC_SHARED(std::uint16_t, rows);
    const int lane = static_cast<int>(threadIdx.x % 32);
    for (int col = 0; col < 8; ++col) rows[lane * kRowStride + col] = stored_element(lane, col);
    __syncwarp();  // ldmatrix reads rows other lanes wrote
    const void* row = lane < 8 * kMatrices ? &rows[(31 - lane) * kRowStride] : nullptr;
    std::uint32_t* mine = &registers[lane * 4];
    if constexpr (kMatrices == 1) {
      kTransposed ? kernels::ldmatrix_x1_trans(mine[0], row) : kernels::ldmatrix_x1(mine[0], row);
    } else if constexpr (kMatrices == 2) {
      std::uint32_t r[2];
      kTransposed ? kernels::ldmatrix_x2_trans(r, row) : kernels::ldmatrix_x2(r, row);
      std::copy(r, r + 2, mine);
    } else {
      std::uint32_t r[4];
      kTransposed ? kernels::ldmatrix_x4_trans(r, row) : kernels::ldmatrix_x4(r, row);
      std::copy(r, r + 4, mine);
    }
  };
  spattn_emulation::launch(kernel, 1, kWarp, kRowsBytes);
  return registers;
}

// How many of the registers ldmatrix filled (kMatrices per lane) differ from `mapping`'s.
int ldmatrix_mismatches(const std::vector<std::uint32_t>& registers, int matrices, Mapping mapping) {
  int mismatches = 0;
  for (int lane = 0; lane < static_cast<int>(kWarp); ++lane) {
    for (int i = 0; i < matrices; ++i) mismatches += registers[lane * 4 + i] != expected_register(lane, i, mapping);
  }
  return mismatches;
}

// ---- death tests ----------------------------------------------------------------------------------------
// Whether `body` stops the process through the emulation (which reports a broken rule and aborts) with a
// message containing `fragment`. Run in a child process; the parent holds no other threads when it forks
// (every launch has joined its threads).
bool emulation_stops(const std::function<void()>& body, const char* fragment) {
  std::fflush(stdout);
  std::fflush(stderr);
  int pipe_ends[2];
  if (pipe(pipe_ends) != 0) return false;
  const pid_t child = fork();
  if (child == 0) {
    const rlimit no_core{0, 0};
    setrlimit(RLIMIT_CORE, &no_core);  // the aborts are expected: no core files
    alarm(20);                         // a hang fails the test instead of blocking it
    close(pipe_ends[0]);
    dup2(pipe_ends[1], STDERR_FILENO);
    body();
    _exit(0);
  }
  close(pipe_ends[1]);
  std::string message;
  char buffer[512];
  for (ssize_t n; (n = read(pipe_ends[0], buffer, sizeof(buffer))) > 0;) message.append(buffer, n);
  close(pipe_ends[0]);
  int status = 0;
  waitpid(child, &status, 0);
  const bool stopped = WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT &&
                       message.find(fragment) != std::string::npos;
  if (!stopped) std::printf("  expected an emulation error with '%s'; got: %s\n", fragment, message.c_str());
  return stopped;
}

// One warp with `shared_bytes` of shared memory runs `body`.
void run_warp(const std::function<void()>& body, std::size_t shared_bytes = 256) {
  spattn_emulation::launch(body, 1, kWarp, shared_bytes);
}
unsigned char* shared_base() { return static_cast<unsigned char*>(spattn_emulation::block_shared()); }
int lane_id() { return static_cast<int>(threadIdx.x % 32); }

}  // namespace

TEST(mma_m16n8k16_float16_and_bfloat16_follow_the_isa_layouts) {
  CHECK((mma_mismatches<__half, 16>(Fault::none) == 0));
  CHECK((mma_mismatches<__nv_bfloat16, 16>(Fault::none) == 0));
}

TEST(mma_m16n8k8_float16_and_bfloat16_follow_the_isa_layouts) {
  CHECK((mma_mismatches<__half, 8>(Fault::none) == 0));
  CHECK((mma_mismatches<__nv_bfloat16, 8>(Fault::none) == 0));
}

TEST(mma_comparison_rejects_wrong_fragments) {
  CHECK((mma_mismatches<__half, 16>(Fault::swapped_a_registers) > 0));
  CHECK((mma_mismatches<__nv_bfloat16, 16>(Fault::swapped_b_halves) > 0));
  CHECK((mma_mismatches<__half, 16>(Fault::other_input_type) > 0));
  CHECK((mma_mismatches<__nv_bfloat16, 8>(Fault::swapped_a_registers) > 0));
  CHECK((mma_mismatches<__half, 8>(Fault::swapped_b_halves) > 0));
  CHECK((mma_mismatches<__nv_bfloat16, 8>(Fault::other_input_type) > 0));
}

TEST(ldmatrix_x1_x2_x4_follow_the_isa_layout) {
  CHECK((ldmatrix_mismatches(run_ldmatrix<1, false>(), 1, Mapping::plain) == 0));
  CHECK((ldmatrix_mismatches(run_ldmatrix<2, false>(), 2, Mapping::plain) == 0));
  CHECK((ldmatrix_mismatches(run_ldmatrix<4, false>(), 4, Mapping::plain) == 0));
}

TEST(ldmatrix_trans_x1_x2_x4_follow_the_isa_layout) {
  CHECK((ldmatrix_mismatches(run_ldmatrix<1, true>(), 1, Mapping::transposed) == 0));
  CHECK((ldmatrix_mismatches(run_ldmatrix<2, true>(), 2, Mapping::transposed) == 0));
  CHECK((ldmatrix_mismatches(run_ldmatrix<4, true>(), 4, Mapping::transposed) == 0));
}

TEST(ldmatrix_comparison_rejects_wrong_lane_mappings) {
  const std::vector<std::uint32_t> plain = run_ldmatrix<4, false>(), transposed = run_ldmatrix<4, true>();
  CHECK(ldmatrix_mismatches(plain, 4, Mapping::transposed) > 0);
  CHECK(ldmatrix_mismatches(plain, 4, Mapping::wrong_columns) > 0);
  CHECK(ldmatrix_mismatches(transposed, 4, Mapping::plain) > 0);
  CHECK(ldmatrix_mismatches(transposed, 4, Mapping::wrong_columns) > 0);
}

// The emulation's rule: ldmatrix reads each row in the lane that names it, before the warp meets, so a row
// another lane wrote without a __syncwarp since may still read as NaN. Lane 1 writes lane 0's row only
// after lane 0 has started its ldmatrix.
TEST(ldmatrix_without_syncwarp_reads_rows_other_lanes_had_not_written) {
  std::atomic<bool> lane_0_at_ldmatrix{false};
  std::uint32_t lane_0_register = 0;
  run_warp(
      [&] {
        SPATTN_DYNAMIC_SHARED(std::uint16_t, rows);
        const int lane = lane_id();
        if (lane == 0) lane_0_at_ldmatrix = true;
        if (lane == 1) {
          while (!lane_0_at_ldmatrix) std::this_thread::yield();
          std::this_thread::sleep_for(std::chrono::milliseconds(200));
          for (int col = 0; col < 8; ++col) rows[col] = stored_element(0, col);
        }
        std::uint32_t r;
        kernels::ldmatrix_x1(r, &rows[lane % 8 * kRowStride]);
        if (lane == 0) lane_0_register = r;  // row 0, columns 0 and 1
      },
      kRowsBytes);
  CHECK(lane_0_register == 0xffffffffu);
}

TEST(cp_async_lands_only_at_the_wait_that_covers_its_group) {
  // Per lane: a 16-byte copy and a 4-byte copy of source_bytes = lane % 5 (group 0), a 16-byte copy of
  // lane % 17 source bytes (group 1), and a 16-byte copy issued but not committed at the first waits.
  // Source bytes are never 0x00, 0x55 or 0xff, so copied, zero-filled, pending (NaN) and stale bytes all
  // differ.
  std::vector<unsigned char> source(32 * 16);
  for (std::size_t i = 0; i < source.size(); ++i) source[i] = static_cast<unsigned char>(1 + i % 83);  // 1 to 83
  constexpr int kRegionBytes = 16 + 4 + 16 + 16;  // per lane: group 0's two, group 1's, the late one
  enum Stage { before_wait, after_wait_1, after_wait_0, after_late_wait, neighbour_after_barrier, stages };
  std::vector<unsigned char> seen(stages * 32 * kRegionBytes, 0);
  run_warp(
      [&] {
        const int lane = lane_id();
        unsigned char* full = shared_base() + lane * 16;
        unsigned char* four = shared_base() + 512 + lane * 4;
        unsigned char* partial = shared_base() + 640 + lane * 16;
        unsigned char* late = shared_base() + 1152 + lane * 16;
        const unsigned char* mine = source.data() + lane * 16;
        const auto record = [&](Stage stage, int of_lane) {
          unsigned char* out = &seen[(stage * 32 + lane) * kRegionBytes];
          std::memcpy(out, shared_base() + of_lane * 16, 16);
          std::memcpy(out + 16, shared_base() + 512 + of_lane * 4, 4);
          std::memcpy(out + 20, shared_base() + 640 + of_lane * 16, 16);
          std::memcpy(out + 36, shared_base() + 1152 + of_lane * 16, 16);
        };
        // Shared memory starts as NaN bytes: overwrite the destinations first, to see the issue refill them.
        for (unsigned char* region : {full, partial, late}) std::memset(region, 0x55, 16);
        std::memset(four, 0x55, 4);
        kernels::cp_async_16(full, mine, 16);
        kernels::cp_async_4(four, lane % 5 == 0 ? nullptr : mine, lane % 5);  // no source bytes: not read
        kernels::cp_async_commit();
        kernels::cp_async_16(partial, lane % 17 == 0 ? nullptr : mine, lane % 17);
        kernels::cp_async_commit();
        kernels::cp_async_16(late, mine, 16);
        record(before_wait, lane);
        kernels::cp_async_wait<1>();
        record(after_wait_1, lane);
        kernels::cp_async_wait<0>();
        record(after_wait_0, lane);
        kernels::cp_async_commit();
        kernels::cp_async_wait<0>();
        record(after_late_wait, lane);
        kernels::cp_async_commit();  // an empty group left behind is harmless
        __syncthreads();             // other threads' copies are visible after their waits and a barrier
        record(neighbour_after_barrier, (lane + 1) % 32);
      },
      1152 + 32 * 16);

  // What lane `of_lane`'s regions hold when each of its copies has landed (`landed`) or is pending.
  const auto expected = [&](int of_lane, bool full_landed, bool partial_landed, bool late_landed) {
    std::vector<unsigned char> bytes(kRegionBytes, 0xff);
    const unsigned char* mine = source.data() + of_lane * 16;
    const auto copy = [&](int at, int size, int source_bytes, bool landed) {
      if (!landed) return;
      for (int i = 0; i < size; ++i) bytes[at + i] = i < source_bytes ? mine[i] : 0;
    };
    copy(0, 16, 16, full_landed);
    copy(16, 4, of_lane % 5, full_landed);
    copy(20, 16, of_lane % 17, partial_landed);
    copy(36, 16, 16, late_landed);
    return bytes;
  };
  const auto seen_at = [&](Stage stage, int lane) {
    const unsigned char* begin = &seen[(stage * 32 + lane) * kRegionBytes];
    return std::vector<unsigned char>(begin, begin + kRegionBytes);
  };
  bool nothing_before_wait = true, group_1_pending = true, all_committed_landed = true, late_landed = true,
       neighbour_visible = true;
  for (int lane = 0; lane < 32; ++lane) {
    nothing_before_wait &= seen_at(before_wait, lane) == expected(lane, false, false, false);
    group_1_pending &= seen_at(after_wait_1, lane) == expected(lane, true, false, false);
    all_committed_landed &= seen_at(after_wait_0, lane) == expected(lane, true, true, false);
    late_landed &= seen_at(after_late_wait, lane) == expected(lane, true, true, true);
    neighbour_visible &= seen_at(neighbour_after_barrier, lane) == expected((lane + 1) % 32, true, true, true);
  }
  CHECK(nothing_before_wait);
  CHECK(group_1_pending);       // wait<1> leaves the latest group in flight
  CHECK(all_committed_landed);  // wait<0> completes every committed group, zero-filled past source_bytes ...
  CHECK(late_landed);           // ... but not copies issued after the last commit
  CHECK(neighbour_visible);
  // Negative control: the comparison tells a pending region from a landed one.
  CHECK(seen_at(after_wait_1, 3) != expected(3, true, true, false));
}

TEST(pack2_rounds_to_nearest_even_with_lo_in_the_low_half) {
  CHECK(kernels::pack2<__half>(1.0f, 2.0f) == 0x4000'3c00u);
  CHECK(kernels::pack2<__nv_bfloat16>(1.0f, 2.0f) == 0x4000'3f80u);
  // Ties go to the even neighbour: 1 + half an ulp to 1 (ties away from zero would round up), 1 + 3 half
  // ulps up to 1 + 2 ulps (truncation would give 1 + 1 ulp); just above a tie rounds up.
  const float half_ulp_f16 = std::ldexp(1.0f, -11), half_ulp_bf16 = std::ldexp(1.0f, -8);
  CHECK(kernels::pack2<__half>(1 + half_ulp_f16, 1 + 3 * half_ulp_f16) == 0x3c02'3c00u);
  CHECK(kernels::pack2<__half>(1 + half_ulp_f16 + std::ldexp(1.0f, -20), -(1 + 3 * half_ulp_f16)) == 0xbc02'3c01u);
  CHECK(kernels::pack2<__half>(65519.0f, 65520.0f) == 0x7c00'7bffu);  // 65520 ties to the even infinity
  CHECK(kernels::pack2<__nv_bfloat16>(1 + half_ulp_bf16, 1 + 3 * half_ulp_bf16) == 0x3f82'3f80u);
  CHECK(kernels::pack2<__nv_bfloat16>(1 + half_ulp_bf16 + std::ldexp(1.0f, -20), -(1 + 3 * half_ulp_bf16)) ==
        0xbf82'3f81u);
}

TEST(shuffles_read_the_named_lane) {
  std::vector<int> from_lane(32), from_xor(32);
  run_warp([&] {
    const int lane = lane_id(), value = lane * 3 + 1;
    from_lane[lane] = kernels::shuffle(value, (lane + 5) % 32);
    from_xor[lane] = kernels::shuffle_xor(value, 6);
  });
  bool right = true;
  for (int lane = 0; lane < 32; ++lane) {
    right &= from_lane[lane] == (lane + 5) % 32 * 3 + 1 && from_xor[lane] == (lane ^ 6) * 3 + 1;
  }
  CHECK(right);
}

TEST(emulation_stops_kernels_that_break_ldmatrix_rules) {
  const auto ldmatrix_from = [](std::function<const void*(int lane)> address, std::size_t shared = 256) {
    return [address, shared] {
      run_warp(
          [&] {
            std::uint32_t r[4];
            kernels::ldmatrix_x4(r, address(lane_id()));
          },
          shared);
    };
  };
  CHECK(emulation_stops(ldmatrix_from([](int lane) { return shared_base() + lane % 8 * 16 + (lane == 3 ? 8 : 0); }),
                        "16-byte aligned"));
  alignas(16) static const std::array<unsigned char, 1024> global_memory{};
  CHECK(emulation_stops(ldmatrix_from([](int lane) { return global_memory.data() + lane * 16; }),
                        "inside the block's shared memory"));
  // Rows just past the end of shared memory, and (248 bytes of it) across its end.
  CHECK(emulation_stops(ldmatrix_from([](int lane) { return shared_base() + (lane == 31 ? 256 : 0); }),
                        "inside the block's shared memory"));
  CHECK(emulation_stops(ldmatrix_from([](int lane) { return shared_base() + (lane == 30 ? 240 : 0); }, 248),
                        "inside the block's shared memory"));
  // Half the warp at another instruction.
  CHECK(emulation_stops(
            [] {
              run_warp([] {
                std::uint32_t r[2];
                if (lane_id() < 16) kernels::ldmatrix_x1(r[0], shared_base());
                else kernels::ldmatrix_x2(r, shared_base());
              });
            },
            "same warp-wide instruction"));
  CHECK(emulation_stops(
            [] {
              run_warp([] {
                kernels::Accumulator d{};
                const std::uint32_t a[4] = {}, b[2] = {};
                if (lane_id() == 7) kernels::mma_m16n8k16<__half>(d, a, b);
                else kernels::mma_m16n8k16<__nv_bfloat16>(d, a, b);
              });
            },
            "same warp-wide instruction"));
}

TEST(emulation_stops_kernels_that_break_cp_async_rules) {
  alignas(16) static const std::array<unsigned char, 64> global_memory{};
  const auto copy_then_wait = [](std::function<void()> copy) {
    return [copy] {
      run_warp([&] {
        copy();
        kernels::cp_async_commit();
        kernels::cp_async_wait<0>();
      });
    };
  };
  CHECK(emulation_stops(copy_then_wait([] { kernels::cp_async_16(shared_base() + 8, global_memory.data(), 16); }),
                        "aligned"));
  CHECK(emulation_stops(copy_then_wait([] { kernels::cp_async_4(shared_base(), global_memory.data() + 2, 4); }),
                        "aligned"));
  CHECK(emulation_stops(copy_then_wait([] { kernels::cp_async_16(shared_base(), global_memory.data(), 17); }),
                        "source_bytes"));
  CHECK(emulation_stops(copy_then_wait([] { kernels::cp_async_4(shared_base(), global_memory.data(), -1); }),
                        "source_bytes"));
  CHECK(emulation_stops(copy_then_wait([] { kernels::cp_async_16(shared_base(), shared_base() + 16, 16); }),
                        "the source must be global memory"));
  alignas(16) static std::array<unsigned char, 64> global_destination{};
  CHECK(emulation_stops(
            copy_then_wait([] { kernels::cp_async_16(global_destination.data(), global_memory.data(), 16); }),
            "inside the block's shared memory"));
  CHECK(emulation_stops(copy_then_wait([] { kernels::cp_async_4(shared_base() + 256, global_memory.data(), 4); }),
                        "inside the block's shared memory"));
  // Kernels that return with copies in flight: one never committed, one committed but never waited for.
  CHECK(emulation_stops([] { run_warp([] { kernels::cp_async_16(shared_base(), global_memory.data(), 16); }); },
                        "not committed or not waited for"));
  CHECK(emulation_stops(
            [] {
              run_warp([] {
                kernels::cp_async_4(shared_base() + lane_id() * 4, global_memory.data(), 4);
                kernels::cp_async_commit();
              });
            },
            "not committed or not waited for"));
}

TEST_MAIN()

#pragma once
// The warp-level primitives of the tensor-core kernels, in one place: mma.sync (m16n8k16 and m16n8k8, float16
// or bfloat16 inputs, float accumulation), ldmatrix (x1, x2, x4, plain and .trans), cp.async (16-byte and
// 4-byte copies with zero-fill, commit and wait groups) and the lane shuffles.
//
// On a GPU each is one PTX instruction. Under SPATTN_CUDA_EMULATION (cpp/tests/cuda_emulation.hpp, included
// first) each is emulated on the CPU lane by lane, following the per-lane fragment layouts of the PTX ISA
// ("Matrix fragments for mma.m16n8k16 / mma.m16n8k8", "ldmatrix"), so the kernels' register logic is tested
// on machines without a GPU; cp.async copies land only at the wait that covers them.
//
// Fragment layouts (PTX ISA), for lane l: group g = l / 4, thread-in-group t = l % 4. A 32-bit register holds
// two 16-bit elements, the lower-numbered column (or row, for B) in its low half.
//   A, m16 x k16: a[0] = (g, 2t..2t+1), a[1] = (g + 8, 2t..2t+1), a[2] = (g, 2t+8..), a[3] = (g + 8, 2t+8..)
//   A, m16 x k8:  a[0] = (g, 2t..2t+1), a[1] = (g + 8, 2t..2t+1)
//   B, k16 x n8:  b[0] = (rows 2t..2t+1, column g), b[1] = (rows 2t+8..2t+9, column g)
//   B, k8 x n8:   b    = (rows 2t..2t+1, column g)
//   C/D, m16 x n8 (float): c[0], c[1] = (g, 2t), (g, 2t+1); c[2], c[3] = (g + 8, 2t), (g + 8, 2t+1)
// ldmatrix: lanes 8 i .. 8 i + 7 give the shared-memory addresses of rows 0..7 of matrix i (each row 8
// 16-bit elements, 16 bytes, 16-byte aligned); lane l receives, of each matrix, row g elements 2t, 2t+1
// (with .trans: of the transposed matrix, i.e. rows 2t, 2t+1 of column g).

#include <cstdint>

#include "device_types.cuh"

namespace spattn::cuda::detail {

// One m16 x n8 float accumulator tile per lane: 4 floats.
struct Accumulator {
  float x[4];
};

// Two floats as two 16-bit elements of D in one register (lo in the low half).
template <typename D>
__device__ __forceinline__ std::uint32_t pack2(float lo, float hi);

// d += a * b. D selects the input type (__half or __nv_bfloat16).
template <typename D>
__device__ __forceinline__ void mma_m16n8k16(Accumulator& d, const std::uint32_t (&a)[4], const std::uint32_t (&b)[2]);
template <typename D>
__device__ __forceinline__ void mma_m16n8k8(Accumulator& d, const std::uint32_t (&a)[2], std::uint32_t b);

// `row` is this lane's row address (see above; lanes past the matrices used give any valid address).
__device__ __forceinline__ void ldmatrix_x1(std::uint32_t& r, const void* row);
__device__ __forceinline__ void ldmatrix_x2(std::uint32_t (&r)[2], const void* row);
__device__ __forceinline__ void ldmatrix_x4(std::uint32_t (&r)[4], const void* row);
__device__ __forceinline__ void ldmatrix_x1_trans(std::uint32_t& r, const void* row);
__device__ __forceinline__ void ldmatrix_x2_trans(std::uint32_t (&r)[2], const void* row);
__device__ __forceinline__ void ldmatrix_x4_trans(std::uint32_t (&r)[4], const void* row);

// Copies `source_bytes` bytes (0 to 16; 0 to 4) from global memory to shared memory and zero-fills the rest
// of the 16 (4) bytes. Both addresses are aligned to the copy's size; with source_bytes == 0 the source is not
// read (any pointer will do). The copy completes at a later cp_async_wait.
__device__ __forceinline__ void cp_async_16(void* shared_destination, const void* global_source, int source_bytes);
__device__ __forceinline__ void cp_async_4(void* shared_destination, const void* global_source, int source_bytes);
// Closes the group of this thread's copies issued since the last commit.
__device__ __forceinline__ void cp_async_commit();
// Waits until at most kPending of this thread's committed groups are still in flight. Other threads' copies
// are visible only after a barrier that follows their own waits.
template <int kPending>
__device__ __forceinline__ void cp_async_wait();

// Lane shuffles over the full warp.
template <typename T>
__device__ __forceinline__ T shuffle_xor(T value, int lane_mask) {
  return __shfl_xor_sync(kFullWarp, value, lane_mask);
}
template <typename T>
__device__ __forceinline__ T shuffle(T value, int source_lane) {
  return __shfl_sync(kFullWarp, value, source_lane);
}

#if !defined(SPATTN_CUDA_EMULATION)
// ---- on the GPU: PTX -----------------------------------------------------------------------------------

template <>
__device__ __forceinline__ std::uint32_t pack2<__half>(float lo, float hi) {
  const __half2 packed = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const std::uint32_t*>(&packed);
}
template <>
__device__ __forceinline__ std::uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  const __nv_bfloat162 packed = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const std::uint32_t*>(&packed);
}

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define SPATTN_PTX(...) asm volatile(__VA_ARGS__)
#else
// Host passes and architectures below sm_80 (bfloat16 mma, cp.async): bodies compiled out; the kernels that
// use these never run there (mma_kernel_ready).
#define SPATTN_PTX(...) \
  do {                  \
  } while (0)
#endif

template <>
__device__ __forceinline__ void mma_m16n8k16<__half>(Accumulator& d, const std::uint32_t (&a)[4],
                                                     const std::uint32_t (&b)[2]) {
  SPATTN_PTX("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
             "{%0,%1,%2,%3};\n"
             : "+f"(d.x[0]), "+f"(d.x[1]), "+f"(d.x[2]), "+f"(d.x[3])
             : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
template <>
__device__ __forceinline__ void mma_m16n8k16<__nv_bfloat16>(Accumulator& d, const std::uint32_t (&a)[4],
                                                            const std::uint32_t (&b)[2]) {
  SPATTN_PTX("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
             "{%0,%1,%2,%3};\n"
             : "+f"(d.x[0]), "+f"(d.x[1]), "+f"(d.x[2]), "+f"(d.x[3])
             : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
template <>
__device__ __forceinline__ void mma_m16n8k8<__half>(Accumulator& d, const std::uint32_t (&a)[2], std::uint32_t b) {
  SPATTN_PTX("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};\n"
             : "+f"(d.x[0]), "+f"(d.x[1]), "+f"(d.x[2]), "+f"(d.x[3])
             : "r"(a[0]), "r"(a[1]), "r"(b));
}
template <>
__device__ __forceinline__ void mma_m16n8k8<__nv_bfloat16>(Accumulator& d, const std::uint32_t (&a)[2],
                                                           std::uint32_t b) {
  SPATTN_PTX("mma.sync.aligned.m16n8k8.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};\n"
             : "+f"(d.x[0]), "+f"(d.x[1]), "+f"(d.x[2]), "+f"(d.x[3])
             : "r"(a[0]), "r"(a[1]), "r"(b));
}

__device__ __forceinline__ std::uint32_t shared_address(const void* pointer) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(pointer));
}

__device__ __forceinline__ void ldmatrix_x1(std::uint32_t& r, const void* row) {
  SPATTN_PTX("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(r) : "r"(shared_address(row)));
}
__device__ __forceinline__ void ldmatrix_x2(std::uint32_t (&r)[2], const void* row) {
  SPATTN_PTX("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
             : "=r"(r[0]), "=r"(r[1])
             : "r"(shared_address(row)));
}
__device__ __forceinline__ void ldmatrix_x4(std::uint32_t (&r)[4], const void* row) {
  SPATTN_PTX("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
             : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
             : "r"(shared_address(row)));
}
__device__ __forceinline__ void ldmatrix_x1_trans(std::uint32_t& r, const void* row) {
  SPATTN_PTX("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n" : "=r"(r) : "r"(shared_address(row)));
}
__device__ __forceinline__ void ldmatrix_x2_trans(std::uint32_t (&r)[2], const void* row) {
  SPATTN_PTX("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
             : "=r"(r[0]), "=r"(r[1])
             : "r"(shared_address(row)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(std::uint32_t (&r)[4], const void* row) {
  SPATTN_PTX("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
             : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
             : "r"(shared_address(row)));
}

// .cg (bypass L1: every byte is read once per block) for 16 bytes; 4-byte copies must use .ca.
__device__ __forceinline__ void cp_async_16(void* shared_destination, const void* global_source, int source_bytes) {
  SPATTN_PTX("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_address(shared_destination)),
             "l"(global_source), "r"(source_bytes));
}
__device__ __forceinline__ void cp_async_4(void* shared_destination, const void* global_source, int source_bytes) {
  SPATTN_PTX("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(shared_address(shared_destination)),
             "l"(global_source), "r"(source_bytes));
}
__device__ __forceinline__ void cp_async_commit() { SPATTN_PTX("cp.async.commit_group;\n" ::); }
// "memory": the compiler must not move this thread's reads of the copies' destinations above the wait (a
// thread may read its own copies without a barrier).
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  SPATTN_PTX("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

#undef SPATTN_PTX

#else
// ---- on the CPU: the emulation (cpp/tests/cuda_emulation.hpp provides the lanes and their exchanges) ----
// mma and ldmatrix: every lane publishes its operands (spattn_emulation::exchange_all, which also requires
// all 32 lanes to be at the same instruction) and then computes its own results from the whole warp's
// operands through the ISA's tables, so a fragment built with the wrong layout gives wrong numbers here as
// on a GPU. ldmatrix reads each row in the lane that names it, before the warp meets: rows that other lanes
// wrote without a __syncwarp (or __syncthreads) since may read as stale or NaN. The exchange itself orders
// memory like a __syncwarp, which the GPU does not promise, so a missing __syncwarp around an mma is not
// caught. cp.async fills its destination with NaN bytes when issued and copies at the cp_async_wait that
// covers its group; other threads see the data after a barrier that follows that wait. Every call checks
// the ISA's rules (alignment, shared memory, sizes) and lets other threads run at some calls.

namespace emulated {

// Where element i of lane `lane`'s fragment lies in its matrix (PTX ISA tables; g = lane / 4, t = lane % 4).
// A (m16 x k16 or k8): a_i is in register i / 2 (low half for even i), row g (+8 for i = 2, 3, 6, 7),
// column 2t + i % 2 (+8 for i >= 4).
struct Position {
  int row, col;
};
inline Position a_position(int lane, int i) { return {lane / 4 + (i / 2) % 2 * 8, lane % 4 * 2 + i % 2 + i / 4 * 8}; }
// B (k16 or k8 x n8): b_i, row 2t + i % 2 (+8 for i >= 2), column g.
inline Position b_position(int lane, int i) { return {lane % 4 * 2 + i % 2 + i / 2 * 8, lane / 4}; }
// C and D (m16 x n8, float): c_i, row g (+8 for i >= 2), column 2t + i % 2.
inline Position c_position(int lane, int i) { return {lane / 4 + i / 2 * 8, lane % 4 * 2 + i % 2}; }

// 16-bit element i of a fragment's registers, as float.
template <typename D>
float fragment_element(const std::uint32_t* registers, int i) {
  using Raw = std::conditional_t<std::is_same_v<D, __half>, __half_raw, __nv_bfloat16_raw>;
  Raw raw;
  raw.x = static_cast<unsigned short>(registers[i / 2] >> (i % 2 * 16));
  return to_float(D(raw));
}

template <typename D>
std::uint16_t bits_of(D value) {
  std::uint16_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  return bits;
}

// Builds the message only when the rule is broken (these checks run at every call).
inline void check(bool condition, const char* instruction, const char* rule) {
  if (!condition) spattn_emulation::require(false, std::string(instruction) + ": " + rule);
}
inline bool aligned(const void* pointer, std::uintptr_t bytes) {
  return reinterpret_cast<std::uintptr_t>(pointer) % bytes == 0;
}

// d += a * b for an m16 x n8 x kK tile: A has K / 4 registers per lane, B K / 8.
template <typename D, int K>
void mma(Accumulator& d, const std::uint32_t* a, const std::uint32_t* b, const char* instruction) {
  spattn_emulation::maybe_yield();
  struct Operands {
    std::uint32_t a[K / 4], b[K / 8];
    float c[4];
  } mine;
  std::memcpy(mine.a, a, sizeof(mine.a));
  std::memcpy(mine.b, b, sizeof(mine.b));
  std::memcpy(mine.c, d.x, sizeof(mine.c));
  const std::array<Operands, 32> warp = spattn_emulation::exchange_all(instruction, mine);
  float matrix_a[16][K], matrix_b[K][8], matrix_c[16][8];
  for (int lane = 0; lane < 32; ++lane) {
    for (int i = 0; i < K / 2; ++i) {
      const Position p = a_position(lane, i);
      matrix_a[p.row][p.col] = fragment_element<D>(warp[lane].a, i);
    }
    for (int i = 0; i < K / 4; ++i) {
      const Position p = b_position(lane, i);
      matrix_b[p.row][p.col] = fragment_element<D>(warp[lane].b, i);
    }
    for (int i = 0; i < 4; ++i) {
      const Position p = c_position(lane, i);
      matrix_c[p.row][p.col] = warp[lane].c[i];
    }
  }
  const int lane = static_cast<int>(threadIdx.x % 32);
  for (int i = 0; i < 4; ++i) {
    const Position p = c_position(lane, i);
    float sum = matrix_c[p.row][p.col];
    for (int k = 0; k < K; ++k) sum += matrix_a[p.row][k] * matrix_b[k][p.col];
    d.x[i] = sum;
  }
}

// The row a lane names, and its eight 16-bit elements as that lane read them.
struct MatrixRow {
  const void* address;
  std::uint16_t elements[8];
};

template <int kMatrices, bool kTransposed>
void ldmatrix(std::uint32_t* r, const void* row, const char* instruction) {
  spattn_emulation::maybe_yield();
  const int lane = static_cast<int>(threadIdx.x % 32);
  MatrixRow mine{row, {}};
  if (lane < 8 * kMatrices) {  // the other lanes' addresses are not used
    check(aligned(row, 16), instruction, "row addresses must be 16-byte aligned");
    check(spattn_emulation::inside_block_shared(row, 16), instruction,
          "row addresses must lie inside the block's shared memory");
    std::memcpy(mine.elements, row, sizeof(mine.elements));
  }
  const std::array<MatrixRow, 32> warp = spattn_emulation::exchange_all(instruction, mine);
  const int g = lane / 4, t = lane % 4;
  for (int i = 0; i < kMatrices; ++i) {
    const MatrixRow* matrix = &warp[8 * i];  // rows 0..7 of matrix i
    const std::uint32_t lo = kTransposed ? matrix[2 * t].elements[g] : matrix[g].elements[2 * t];
    const std::uint32_t hi = kTransposed ? matrix[2 * t + 1].elements[g] : matrix[g].elements[2 * t + 1];
    r[i] = lo | hi << 16;
  }
}

template <int kSize>
void cp_async(void* shared_destination, const void* global_source, int source_bytes, const char* instruction) {
  spattn_emulation::maybe_yield();
  check(aligned(shared_destination, kSize) && aligned(global_source, kSize), instruction,
        "both addresses must be aligned to the copy's size");
  check(source_bytes >= 0 && source_bytes <= kSize, instruction, "source_bytes must be 0 to the copy's size");
  check(spattn_emulation::inside_block_shared(shared_destination, kSize), instruction,
        "the destination must lie inside the block's shared memory");
  check(source_bytes == 0 || !spattn_emulation::inside_block_shared(global_source, 1), instruction,
        "the source must be global memory");
  auto* destination = static_cast<unsigned char*>(shared_destination);
  std::memset(destination, 0xff, kSize);  // NaN until the wait that covers the copy
  spattn_emulation::current_block()->async_copies[threadIdx.x].uncommitted.push_back(
      {destination, static_cast<const unsigned char*>(global_source), static_cast<std::size_t>(source_bytes),
       static_cast<std::size_t>(kSize)});
}

}  // namespace emulated

template <>
__device__ __forceinline__ std::uint32_t pack2<__half>(float lo, float hi) {
  return emulated::bits_of(__float2half_rn(lo)) | std::uint32_t{emulated::bits_of(__float2half_rn(hi))} << 16;
}
template <>
__device__ __forceinline__ std::uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  return emulated::bits_of(__float2bfloat16_rn(lo)) |
         std::uint32_t{emulated::bits_of(__float2bfloat16_rn(hi))} << 16;
}

template <>
__device__ __forceinline__ void mma_m16n8k16<__half>(Accumulator& d, const std::uint32_t (&a)[4],
                                                     const std::uint32_t (&b)[2]) {
  emulated::mma<__half, 16>(d, a, b, "mma.m16n8k16.f16");
}
template <>
__device__ __forceinline__ void mma_m16n8k16<__nv_bfloat16>(Accumulator& d, const std::uint32_t (&a)[4],
                                                            const std::uint32_t (&b)[2]) {
  emulated::mma<__nv_bfloat16, 16>(d, a, b, "mma.m16n8k16.bf16");
}
template <>
__device__ __forceinline__ void mma_m16n8k8<__half>(Accumulator& d, const std::uint32_t (&a)[2], std::uint32_t b) {
  emulated::mma<__half, 8>(d, a, &b, "mma.m16n8k8.f16");
}
template <>
__device__ __forceinline__ void mma_m16n8k8<__nv_bfloat16>(Accumulator& d, const std::uint32_t (&a)[2],
                                                           std::uint32_t b) {
  emulated::mma<__nv_bfloat16, 8>(d, a, &b, "mma.m16n8k8.bf16");
}

__device__ __forceinline__ void ldmatrix_x1(std::uint32_t& r, const void* row) {
  emulated::ldmatrix<1, false>(&r, row, "ldmatrix.x1");
}
__device__ __forceinline__ void ldmatrix_x2(std::uint32_t (&r)[2], const void* row) {
  emulated::ldmatrix<2, false>(r, row, "ldmatrix.x2");
}
__device__ __forceinline__ void ldmatrix_x4(std::uint32_t (&r)[4], const void* row) {
  emulated::ldmatrix<4, false>(r, row, "ldmatrix.x4");
}
__device__ __forceinline__ void ldmatrix_x1_trans(std::uint32_t& r, const void* row) {
  emulated::ldmatrix<1, true>(&r, row, "ldmatrix.x1.trans");
}
__device__ __forceinline__ void ldmatrix_x2_trans(std::uint32_t (&r)[2], const void* row) {
  emulated::ldmatrix<2, true>(r, row, "ldmatrix.x2.trans");
}
__device__ __forceinline__ void ldmatrix_x4_trans(std::uint32_t (&r)[4], const void* row) {
  emulated::ldmatrix<4, true>(r, row, "ldmatrix.x4.trans");
}

__device__ __forceinline__ void cp_async_16(void* shared_destination, const void* global_source, int source_bytes) {
  emulated::cp_async<16>(shared_destination, global_source, source_bytes, "cp.async 16");
}
__device__ __forceinline__ void cp_async_4(void* shared_destination, const void* global_source, int source_bytes) {
  emulated::cp_async<4>(shared_destination, global_source, source_bytes, "cp.async 4");
}
__device__ __forceinline__ void cp_async_commit() {
  spattn_emulation::maybe_yield();
  spattn_emulation::current_block()->async_copies[threadIdx.x].commit();
}
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  static_assert(kPending >= 0);
  spattn_emulation::maybe_yield();
  spattn_emulation::current_block()->async_copies[threadIdx.x].wait(kPending);
}
#endif

}  // namespace spattn::cuda::detail

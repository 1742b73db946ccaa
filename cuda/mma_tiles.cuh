#pragma once
// Tensor-core tiles for the grouped attention kernels (the execution plan, float16 and bfloat16).
//
// A plan group is a small dense attention problem: its rows (up to kChunkRows at a time) and the keys of one
// column tile (up to kTileColumns) are gathered into shared memory in the storage type, zero-padded to
// multiples of 16 in both directions, and multiplied as 16 x 16 x 16 blocks by nvcuda::wmma with float
// accumulation. Warp w of a block owns rows [16 w, 16 w + 16) of the chunk; products that mix rows of
// several warps (the backward's dK and dV) run after a block barrier.
//
// wmma's rules: a fragment's pointer is 32-byte aligned and a leading dimension a multiple of 16 bytes. Every
// tile starts at a 128-byte boundary, blocks start at multiples of 16 rows and 16 columns, and each row is
// padded by 16 bytes (8 half elements or 4 floats), which keeps the rows of a block off each other's banks.
// Padding must be zeros, never stale shared memory: a product multiplies it (0 * NaN would poison a row).

#include <mma.h>

#include "attention_arguments.cuh"
#include "attention_mma.hpp"

// Kernel bodies compile for sm_80 and newer (bfloat16 wmma); the host never launches them on older devices.
// The C++ tests run the same bodies on the CPU (cpp/tests/cuda_emulation.hpp).
#if (defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800) || defined(SPATTN_CUDA_EMULATION)
#define SPATTN_MMA_DEVICE_CODE 1
#else
#define SPATTN_MMA_DEVICE_CODE 0
#endif

namespace spattn::cuda::detail {

namespace wmma = nvcuda::wmma;

constexpr int kBlockSize = 16;                       // wmma m16n16k16
constexpr int kMmaWarps = 4;                         // warps per block
constexpr int kMmaThreads = 32 * kMmaWarps;
constexpr int kChunkRows = kMmaWarps * kBlockSize;   // rows of a group per pass
constexpr int kTileColumns = 64;                     // a Swin window (49 keys) fits one tile
constexpr int kColumnsPerLane = kTileColumns / 2;    // two lanes share a row in the element-wise steps
// Blocks per SM the kernels are compiled for (a register budget for ptxas: 65536 / (kMmaThreads * blocks)).
// The forward's tiles take 41 KiB of shared memory and the backward's 64 KiB at head dim 32, so these are
// also what the shared memory allows on an H100 (227 KiB per SM).
constexpr int kForwardBlocksPerSm = 4;
constexpr int kBackwardBlocksPerSm = 3;
static_assert(kChunkRows == kMmaChunkRows, "attention_mma.hpp states the chunk size to the host code");

// The wmma fragments over storage type D (__half or __nv_bfloat16).
template <typename D>
using MatrixA = wmma::fragment<wmma::matrix_a, kBlockSize, kBlockSize, kBlockSize, D, wmma::row_major>;
template <typename D>
using MatrixATransposed = wmma::fragment<wmma::matrix_a, kBlockSize, kBlockSize, kBlockSize, D, wmma::col_major>;
template <typename D>
using MatrixB = wmma::fragment<wmma::matrix_b, kBlockSize, kBlockSize, kBlockSize, D, wmma::row_major>;
template <typename D>
using MatrixBTransposed = wmma::fragment<wmma::matrix_b, kBlockSize, kBlockSize, kBlockSize, D, wmma::col_major>;
using Accumulator = wmma::fragment<wmma::accumulator, kBlockSize, kBlockSize, kBlockSize, float>;

__host__ __device__ constexpr int padded_to_blocks(int n) { return (n + kBlockSize - 1) / kBlockSize * kBlockSize; }
// Row strides (in elements) of a tile whose rows hold `padded` elements.
__host__ __device__ constexpr int half_stride(int padded) { return padded + 8; }
__host__ __device__ constexpr int float_stride(int padded) { return padded + 4; }

// Hands out 128-byte aligned byte offsets into the dynamic shared memory (host and device agree on them).
struct SharedCarver {
  int bytes = 0;
  __host__ __device__ int take(int size) {
    const int at = bytes;
    bytes += (size + 127) / 128 * 128;
    return at;
  }
};

// In the backward, a group of at most one chunk of rows reduces dK and dV of the columns it owns: those
// whose entries all lie in the group. Every row of a group has the group's columns, so a column with as many
// entries as the group has rows has no others. The column pass skips exactly these columns.
__device__ __forceinline__ bool column_owned_by_group(index_t column_entries, index_t group_size) {
  return group_size > 0 && group_size <= kChunkRows && column_entries == group_size;
}

// Gathers rows `indices[0, count)` of `source` (rows of `dim` elements) into tile[padded_rows][stride],
// zeros in every other element of [padded_rows][padded_dim]. `vectorized`: source 16-byte aligned and dim a
// multiple of 8, so each 8-element piece is one 16-byte load. Called by every thread of the block; the
// caller's barriers order it against the tile's readers.
template <typename D>
__device__ __forceinline__ void gather_rows(D* __restrict__ tile, int stride, int padded_rows, int padded_dim,
                                            const D* __restrict__ source, index_t dim,
                                            const index_t* __restrict__ indices, int count, bool vectorized) {
  if (vectorized) {
    constexpr int kPiece = 8;
    const int pieces = padded_dim / kPiece;
    for (int e = threadIdx.x; e < padded_rows * pieces; e += blockDim.x) {
      const int r = e / pieces, piece = e % pieces;
      uint4 value = make_uint4(0u, 0u, 0u, 0u);
      if (r < count && piece * kPiece < dim) {
        value = *reinterpret_cast<const uint4*>(source + indices[r] * dim + piece * kPiece);
      }
      *reinterpret_cast<uint4*>(tile + r * stride + piece * kPiece) = value;
    }
  } else {
    const D zero = from_float<D>(0.f);
    for (int e = threadIdx.x; e < padded_rows * padded_dim; e += blockDim.x) {
      const int r = e / padded_dim, d = e % padded_dim;
      tile[r * stride + d] = r < count && d < dim ? source[indices[r] * dim + d] : zero;
    }
  }
}

// out[16][n * 16 ...] (+)= a[16][k] * b[k][n * 16 ...] for one warp: `a` 16 rows of `a_blocks` blocks,
// `b` (row-major [k][n], or [n][k] when kTransposeB) `n_blocks` blocks wide; `out` a float tile. With
// `accumulate` the product is added to out's current contents.
template <bool kTransposeA, bool kTransposeB, typename D>
__device__ __forceinline__ void warp_product(const D* __restrict__ a, int a_stride, int k_blocks,
                                             const D* __restrict__ b, int b_stride, int n_blocks,
                                             float* __restrict__ out, int out_stride, bool accumulate) {
  using FragmentA = std::conditional_t<kTransposeA, MatrixATransposed<D>, MatrixA<D>>;
  using FragmentB = std::conditional_t<kTransposeB, MatrixBTransposed<D>, MatrixB<D>>;
  for (int n = 0; n < n_blocks; ++n) {
    Accumulator sum;
    if (accumulate) {
      wmma::load_matrix_sync(sum, out + n * kBlockSize, out_stride, wmma::mem_row_major);
    } else {
      wmma::fill_fragment(sum, 0.f);
    }
    for (int k = 0; k < k_blocks; ++k) {
      FragmentA a_block;
      FragmentB b_block;
      // Block (0, k) of A: column-major storage puts element (i, j) at a[i + j * stride].
      wmma::load_matrix_sync(a_block, kTransposeA ? a + k * kBlockSize * a_stride : a + k * kBlockSize, a_stride);
      // Block (k, n) of B: stored as B^T ([n][k]) it starts at row n, column k.
      wmma::load_matrix_sync(b_block,
                             kTransposeB ? b + n * kBlockSize * b_stride + k * kBlockSize
                                         : b + k * kBlockSize * b_stride + n * kBlockSize,
                             b_stride);
      wmma::mma_sync(sum, a_block, b_block, sum);
    }
    wmma::store_matrix_sync(out + n * kBlockSize, sum, out_stride, wmma::mem_row_major);
  }
}

}  // namespace spattn::cuda::detail

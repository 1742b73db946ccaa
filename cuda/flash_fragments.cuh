#pragma once
// The two warp-level products of the register-resident kernels (forward and backward), on one warp's 16 rows:
//   row_products:      S[16 x keys] = A[16 x k] B^T, A and B stage rows (q or dO; k or v, [key][k]), both
//                      through ldmatrix (B 8 keys x 32 of k per ldmatrix.x4): S = Q K^T, dP = dO V^T
//   accumulate_weighted: O[16 x dim] += W[16 x keys] R, W the float accumulators of the first product re-packed
//                      in registers as the A operand, R the stage rows of v or k ([key][dim], ldmatrix.trans):
//                      O += P V, dQ += dS K. Two n8 blocks of W form one m16k16 A fragment; an odd last block
//                      of keys takes m16n8k8.
// Keys come at n8 granularity: key blocks past `key_blocks` are neither computed nor read.

#include "flash_step.cuh"

namespace spattn::cuda::detail {

// S = A B^T for the warp's 16 rows: `a_rows` the 16 stage rows of A (q or dO, row stride a_stride), `keys`
// the stage rows of B ([key][k], row stride `stride`); k16 steps [0, steps) of at most kSteps. A's fragments
// are loaded two k16 steps at a time, so few registers hold them.
template <int kSteps, typename D>
__device__ __forceinline__ void row_products(Accumulator (&scores)[kKeyBlocks], const D* a_rows, int a_stride,
                                             int steps, const D* keys, int stride, int key_blocks, int lane) {
#pragma unroll
  for (int n = 0; n < kKeyBlocks; ++n) scores[n] = Accumulator{};
  const D* a_row = a_rows + (lane % 16) * a_stride + lane / 16 * 8;
#pragma unroll
  for (int k = 0; k < kSteps; k += 2) {
    if (k >= steps) continue;
    const bool two = k + 1 < steps;
    std::uint32_t a[2][4];
    ldmatrix_x4(a[0], a_row + k * 16);
    if (two) ldmatrix_x4(a[1], a_row + (k + 1) * 16);
#pragma unroll
    for (int n = 0; n < kKeyBlocks; ++n) {
      if (n >= key_blocks) continue;
      const D* key_row = keys + (n * 8 + lane % 8) * stride + k * 16;
      if (two) {
        std::uint32_t b[4];
        ldmatrix_x4(b, key_row + lane / 8 * 8);
        mma_m16n8k16<D>(scores[n], a[0], {b[0], b[1]});
        mma_m16n8k16<D>(scores[n], a[1], {b[2], b[3]});
      } else {
        std::uint32_t b[2];
        ldmatrix_x2(b, key_row + lane / 8 % 2 * 8);
        mma_m16n8k16<D>(scores[n], a[0], b);
      }
    }
  }
}

// out (kOutBlocks n8 blocks, `pairs` pairs of them used) += weights R.
template <int kOutBlocks, typename D>
__device__ __forceinline__ void accumulate_weighted(Accumulator (&out)[kOutBlocks],
                                                    const Accumulator (&weights)[kKeyBlocks], int key_blocks,
                                                    const D* rows, int stride, int pairs, int lane) {
#pragma unroll
  for (int j = 0; j < kKeyBlocks / 2; ++j) {
    if (2 * j >= key_blocks) continue;
    const Accumulator& low = weights[2 * j];
    if (2 * j + 1 < key_blocks) {
      const Accumulator& high = weights[2 * j + 1];
      const std::uint32_t a[4] = {pack2<D>(low.x[0], low.x[1]), pack2<D>(low.x[2], low.x[3]),
                                  pack2<D>(high.x[0], high.x[1]), pack2<D>(high.x[2], high.x[3])};
      const D* row = rows + (j * 16 + lane % 16) * stride + lane / 16 * 8;
#pragma unroll
      for (int p = 0; p < kOutBlocks / 2; ++p) {
        if (p >= pairs) continue;
        std::uint32_t b[4];
        ldmatrix_x4_trans(b, row + p * 16);
        mma_m16n8k16<D>(out[2 * p], a, {b[0], b[1]});
        mma_m16n8k16<D>(out[2 * p + 1], a, {b[2], b[3]});
      }
    } else {
      const std::uint32_t a[2] = {pack2<D>(low.x[0], low.x[1]), pack2<D>(low.x[2], low.x[3])};
      const D* row = rows + (j * 16 + lane % 8) * stride + lane / 8 % 2 * 8;
#pragma unroll
      for (int p = 0; p < kOutBlocks / 2; ++p) {
        if (p >= pairs) continue;
        std::uint32_t b[2];
        ldmatrix_x2_trans(b, row + p * 16);
        mma_m16n8k8<D>(out[2 * p], a, b[0]);
        mma_m16n8k8<D>(out[2 * p + 1], a, b[1]);
      }
    }
  }
}

// Where this lane's two rows' bias runs of the tile start in the stage (see gather_bias).
template <typename D>
__device__ __forceinline__ void bias_rows(const D* (&rows)[2], const char* stage, const FlashLayout& t,
                                          const StepDescriptor& d, const D* bias_head, int tile, bool async,
                                          int warp, int lane) {
  const D* bias_tile = reinterpret_cast<const D*>(stage + t.bias);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = warp * 16 + lane / 4 + 8 * h;
    const D* run = bias_head + d.row_entries[r] + static_cast<index_t>(tile) * kFlashKeys;
    rows[h] = bias_tile + r * kBiasStride + bias_phase(run, async);
  }
}

// The products S of this lane (its rows group and group + 8, columns pair and pair + 1 of each n8 block) in
// place as scores in the log2 domain, S scale log2(e) + bias log2(e); `bias` the rows' runs from bias_rows,
// or nulls without a bias.
template <typename D>
__device__ __forceinline__ void to_log2_scores(Accumulator (&scores)[kKeyBlocks], int key_blocks,
                                               const D* const (&bias)[2], float scale_log2, int lane) {
  const int pair = 2 * (lane % 4);
#pragma unroll
  for (int n = 0; n < kKeyBlocks; ++n) {
    if (n >= key_blocks) continue;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      float x = scores[n].x[i] * scale_log2;
      if (bias[0] != nullptr) x = fmaf(to_float(bias[i / 2][n * 8 + pair + i % 2]), kLog2e, x);
      scores[n].x[i] = x;
    }
  }
}

}  // namespace spattn::cuda::detail

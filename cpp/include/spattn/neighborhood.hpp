#pragma once
// Neighborhood attention (NATTEN's sliding windows, dilated and causal) on 1-D, 2-D and 3-D grids, and
// Video Swin Transformer's 3-D (shifted) windows. Grid tokens are numbered row-major: on a
// (s0, s1, s2) grid token (x0, x1, x2) is (x0 * s1 + x1) * s2 + x2.

#include <vector>

#include "spattn/csr.hpp"

namespace spattn::patterns {

// One axis of a neighborhood pattern: NATTEN 0.21's rule (kernel_size, stride, dilation, is_causal).
//
// The axis splits into `dilation` interleaved groups (coordinates equal modulo dilation); positions and
// lengths below count group members. Queries split into stride groups of `stride` consecutive positions,
// [p / stride * stride, ... + stride), and a query's window is that of its group's leader:
//   non-causal: leader = min(p / stride * stride + stride / 2, length - 1) (the centre, its right one for an
//               even stride); the window is the `kernel_size` members from
//               min(max(leader - kernel_size / 2, 0), length - kernel_size): centred on the leader (one more
//               member on the left for an even kernel), shifted inwards at the borders so that it always holds
//               exactly kernel_size members.
//   causal:     leader = min(p / stride * stride + stride - 1, length - 1) (the last); the window runs from
//               max(leader - kernel_size + 1, 0) to the query itself (never past it), so queries of one stride
//               group share a start but not an end.
// stride == 1 is the plain sliding window; stride == kernel_size tiles the axis into blocks (window
// attention), with a last, partial block's queries attending to the last kernel_size members.
// Read in NATTEN's source: the flex mask (src/natten/backends/flex.py, get_na_flex_mask /
// single_dim_tiling_mask: stride_group_leader, window_center clamped to [window_left, length - 1 -
// window_right]) and get_win_start in its CUDA kernels, which agree.
//
// Every group must hold at least kernel_size members, i.e. kernel_size * dilation <= size, and
// 1 <= stride <= kernel_size (NATTEN's check_args_against_input). The size rule applies to causal axes too,
// where a longer kernel would be well defined but could never be filled: keeping one rule means a
// (shape, kernel_size, dilation) is valid or not whatever `causal` says, and the kernel's relative-position
// table is always fully used. A query always lies in its own window, so key - query stays within
// +-(kernel_size - 1) members whatever the stride.
struct NeighborhoodAxis {
  index_t size = 1;
  index_t kernel_size = 1;
  index_t dilation = 1;
  bool causal = false;
  index_t stride = 1;
};

// Neighborhood attention over 1 to 3 axes: a token attends to the product of its per-axis windows.
// Non-causal rows hold exactly the product of the kernel sizes. Columns are sorted (row-major order).
Csr neighborhood(const std::vector<NeighborhoodAxis>& axes);

// For every entry of neighborhood(axes), in CSR order, its index into a relative-position-bias table of
// (2 * k0 - 1) x (2 * k1 - 1) x ... entries (row-major): per axis the offset
// (key - query) / dilation + kernel_size - 1, counted in group members.
std::vector<index_t> neighborhood_bias_index(const std::vector<NeighborhoodAxis>& axes);

// Video Swin Transformer's (shifted) 3-D window attention on a T x H x W grid. Per axis, in un-rolled
// order, the groups are [0, shift), [shift, shift + window), ... (border groups partial, no wrap-around);
// a token attends to exactly the tokens sharing its group on all three axes. This is what Video Swin's
// roll(-shift) + 3-D window partition + region mask computes. Requires 1 <= window <= size and
// 0 <= shift < window on each axis.
Csr swin_3d(index_t frames, index_t height, index_t width, index_t window_frames, index_t window_height,
            index_t window_width, index_t shift_frames, index_t shift_height, index_t shift_width);

}  // namespace spattn::patterns

// Neighborhood and 3-D Swin patterns against brute-force definitions written independently of the
// generators: NATTEN's flex-mask predicate applied to every member of a dilation group (stride, even
// kernels and causality included), and Video Swin's roll + region labels.

#include <algorithm>
#include <chrono>
#include <vector>

#include "check.hpp"
#include "spattn/spattn.hpp"

using spattn::Csr;
using spattn::index_t;
using spattn::patterns::NeighborhoodAxis;
namespace patterns = spattn::patterns;

namespace {

// The coordinates of one axis that a query at x may attend to: the members of x's dilation group that
// NATTEN's flex mask (src/natten/backends/flex.py) admits, its predicate transcribed per member. Positions
// count group members; each stride group has a leader, its centre or (causal) its last query.
std::vector<index_t> reference_window(const NeighborhoodAxis& axis, index_t x) {
  std::vector<index_t> group;
  for (index_t y = x % axis.dilation; y < axis.size; y += axis.dilation) group.push_back(y);
  const index_t length = static_cast<index_t>(group.size()), position = x / axis.dilation;
  const index_t stride_group_start = position / axis.stride * axis.stride;
  std::vector<index_t> window;
  for (index_t member = 0; member < length; ++member) {
    bool admitted = false;
    if (axis.causal) {
      const index_t leader = std::min(stride_group_start + axis.stride - 1, length - 1);
      admitted = position - member >= 0 && leader - member < axis.kernel_size;
    } else {
      const index_t left = axis.kernel_size / 2, right = axis.kernel_size / 2 + axis.kernel_size % 2 - 1;
      const index_t leader = std::min(stride_group_start + axis.stride / 2, length - 1);
      const index_t centre = std::min(std::max(leader, left), length - 1 - right);
      admitted = (centre - member >= 0 && centre - member <= left) || (member - centre >= 0 && member - centre <= right);
    }
    if (admitted) window.push_back(group[member]);
  }
  return window;
}

bool contains(const std::vector<index_t>& values, index_t value) {
  for (index_t v : values)
    if (v == value) return true;
  return false;
}

// Row-major coordinates of a token on a grid with the given sizes.
std::vector<index_t> coordinates_of(index_t token, const std::vector<NeighborhoodAxis>& axes) {
  std::vector<index_t> x(axes.size());
  for (std::size_t i = axes.size(); i-- > 0;) {
    x[i] = token % axes[i].size;
    token /= axes[i].size;
  }
  return x;
}

index_t token_count(const std::vector<NeighborhoodAxis>& axes) {
  index_t tokens = 1;
  for (const auto& axis : axes) tokens *= axis.size;
  return tokens;
}

// Checks the pattern entry by entry against the dense definition, and the bias index of each entry.
bool matches_reference(const std::vector<NeighborhoodAxis>& axes) {
  const Csr csr = patterns::neighborhood(axes);
  const std::vector<index_t> bias = patterns::neighborhood_bias_index(axes);
  const index_t tokens = token_count(axes);
  spattn::validate(csr.view(), static_cast<index_t>(csr.row_offsets().size()), csr.nnz());
  if (csr.rows() != tokens || csr.cols() != tokens || static_cast<index_t>(bias.size()) != csr.nnz()) return false;
  for (index_t q = 0; q < tokens; ++q) {
    const auto xq = coordinates_of(q, axes);
    std::vector<std::vector<index_t>> windows;
    for (std::size_t i = 0; i < axes.size(); ++i) windows.push_back(reference_window(axes[i], xq[i]));
    index_t k = csr.row_offsets()[q];
    for (index_t key = 0; key < tokens; ++key) {
      const auto xk = coordinates_of(key, axes);
      bool attends = true;
      index_t expected_bias = 0;
      for (std::size_t i = 0; i < axes.size(); ++i) {
        attends = attends && contains(windows[i], xk[i]);
        expected_bias = expected_bias * (2 * axes[i].kernel_size - 1) + (xk[i] - xq[i]) / axes[i].dilation +
                        axes[i].kernel_size - 1;
      }
      if (!attends) continue;
      if (k >= csr.row_offsets()[q + 1] || csr.col_indices()[k] != key || bias[k] != expected_bias) {
        std::printf("  mismatch at query %lld key %lld\n", static_cast<long long>(q), static_cast<long long>(key));
        return false;
      }
      ++k;
    }
    if (k != csr.row_offsets()[q + 1]) {
      std::printf("  query %lld has extra entries\n", static_cast<long long>(q));
      return false;
    }
  }
  return true;
}

// Video Swin's label of a coordinate: its window after roll(-shift), and its region (slices
// (0, -window), (-window, -shift), (-shift, None)) of the rolled axis.
int swin_label(index_t x, index_t size, index_t window, index_t shift) {
  const index_t rolled = ((x - shift) % size + size) % size;
  int region = 0;
  if (shift > 0) region = rolled < size - window ? 0 : (rolled < size - shift ? 1 : 2);
  return static_cast<int>(rolled / window * 3 + region);
}

}  // namespace

TEST(neighborhood_1d_matches_reference) {
  for (index_t size : {1, 5, 8, 13}) {
    for (index_t kernel = 1; kernel <= size; ++kernel) {
      for (index_t dilation = 1; kernel * dilation <= size; ++dilation) {
        for (bool causal : {false, true}) CHECK(matches_reference({{size, kernel, dilation, causal}}));
      }
    }
  }
}

TEST(neighborhood_1d_with_stride_matches_reference) {
  for (index_t size : {4, 7, 12}) {
    for (index_t kernel = 1; kernel <= size; ++kernel) {
      for (index_t stride = 1; stride <= kernel; ++stride) {
        for (index_t dilation = 1; kernel * dilation <= size; ++dilation) {
          for (bool causal : {false, true}) CHECK(matches_reference({{size, kernel, dilation, causal, stride}}));
        }
      }
    }
  }
}

TEST(neighborhood_with_stride_equal_to_kernel_is_window_attention) {
  // Blocks of kernel_size tokens per axis attend to themselves: Swin's windows without shift.
  const Csr blocked = patterns::neighborhood({{12, 4, 1, false, 4}, {9, 3, 1, false, 3}});
  const Csr windows = patterns::swin(12, 9, 4, 3, 0, 0);
  CHECK(blocked.row_offsets() == windows.row_offsets());
  CHECK(blocked.col_indices() == windows.col_indices());
}

TEST(neighborhood_2d_matches_reference) {
  const index_t shapes[][2] = {{7, 7}, {6, 11}, {12, 5}, {9, 10}};
  for (auto [h, w] : shapes) {
    for (index_t kernel : {1, 2, 3, 4, 5}) {
      for (index_t dilation : {1, 2}) {
        if (kernel * dilation > h || kernel * dilation > w) continue;
        for (bool causal : {false, true}) {
          CHECK(matches_reference({{h, kernel, dilation, causal}, {w, kernel, dilation, causal}}));
        }
      }
    }
  }
  // Per-axis kernel, dilation and causality.
  CHECK(matches_reference({{10, 3, 3, true}, {7, 5, 1, false}}));
  CHECK(matches_reference({{8, 2, 1, false}, {12, 3, 4, true}}));
  // Per-axis stride, even kernels and strides among them.
  CHECK(matches_reference({{11, 4, 2, false, 3}, {9, 3, 1, true, 2}}));
  CHECK(matches_reference({{10, 6, 1, true, 4}, {13, 4, 3, false, 4}}));
}

TEST(neighborhood_3d_matches_reference) {
  CHECK(matches_reference({{4, 3, 1, false}, {6, 3, 2, false}, {5, 5, 1, false}}));
  CHECK(matches_reference({{5, 2, 2, true}, {4, 3, 1, false}, {7, 3, 2, false}}));
  CHECK(matches_reference({{3, 3, 1, true}, {3, 1, 1, false}, {9, 4, 2, true}}));
  CHECK(matches_reference({{6, 3, 2, true, 2}, {5, 2, 1, false, 2}, {8, 4, 1, false, 3}}));
}

TEST(neighborhood_rows_hold_the_whole_kernel) {
  const Csr csr = patterns::neighborhood({{17, 5, 3, false}, {20, 7, 2, false}});
  bool all_full = true;
  for (index_t row = 0; row < csr.rows(); ++row) all_full = all_full && csr.view().row_length(row) == 35;
  CHECK(all_full);
  CHECK(csr.nnz() == 17 * 20 * 35);
  // Whatever the stride, as long as no axis is causal.
  const Csr strided = patterns::neighborhood({{17, 5, 3, false, 4}, {20, 6, 2, false, 5}});
  CHECK(strided.nnz() == 17 * 20 * 30);
}

TEST(neighborhood_rejects_bad_arguments) {
  CHECK_THROWS(patterns::neighborhood({}), "shape");
  CHECK_THROWS(patterns::neighborhood({{4, 1}, {4, 1}, {4, 1}, {4, 1}}), "shape");
  CHECK_THROWS(patterns::neighborhood({{0, 1}}), "shape[0]");
  CHECK_THROWS(patterns::neighborhood({{8, 0}}), "kernel_size[0]");
  CHECK_THROWS(patterns::neighborhood({{8, 3}, {8, -1}}), "kernel_size[1]");
  CHECK_THROWS(patterns::neighborhood({{8, 3, 0}}), "dilation[0]");
  CHECK_THROWS(patterns::neighborhood({{8, 9}}), "kernel_size[0]");
  // 11 tokens with dilation 3: groups of 4, 4 and 3; a kernel of 4 does not fit the last one.
  CHECK_THROWS(patterns::neighborhood({{11, 4, 3}}), "kernel_size[0]");
  CHECK_THROWS(patterns::neighborhood({{11, 4, 3, true}}), "kernel_size[0]");
  CHECK_THROWS(patterns::neighborhood_bias_index({{8, 3, 9}}), "kernel_size[0]");
  CHECK_THROWS(patterns::neighborhood({{8, 3, 1, false, 0}}), "stride[0]");
  CHECK_THROWS(patterns::neighborhood({{8, 3, 1, false, 1}, {8, 3, 1, false, 4}}), "stride[1]");
  CHECK_THROWS(patterns::neighborhood({{index_t{1} << 40, 1}, {index_t{1} << 40, 1}}), "too large");
  // 2^30 tokens of 2^12 entries each: refused before the 8 GiB of row offsets are allocated.
  CHECK_THROWS(patterns::neighborhood({{index_t{1} << 30, index_t{1} << 12}}), "entries");
  CHECK_THROWS(patterns::neighborhood_bias_index({{index_t{1} << 30, index_t{1} << 12}}), "entries");
}

TEST(neighborhood_256x256_kernel_7_is_fast) {
  const auto start = std::chrono::steady_clock::now();
  const Csr csr = patterns::neighborhood({{256, 7}, {256, 7}});
  const auto bias = patterns::neighborhood_bias_index({{256, 7}, {256, 7}});
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("  256 x 256, kernel 7: %lld entries in %.3f s\n", static_cast<long long>(csr.nnz()), seconds);
  CHECK(csr.nnz() == 256 * 256 * 49);
  CHECK(static_cast<index_t>(bias.size()) == csr.nnz());
  CHECK(seconds < 1.0);
}

TEST(swin_3d_matches_roll_and_region_mask) {
  const index_t shapes[][3] = {{4, 8, 8}, {2, 6, 12}, {8, 4, 6}, {6, 6, 6}};
  const index_t windows[][3] = {{2, 2, 2}, {2, 3, 2}, {1, 2, 3}, {2, 2, 6}};
  for (auto [t, h, w] : shapes) {
    for (auto [wt, wh, ww] : windows) {
      if (t % wt || h % wh || w % ww) continue;
      for (index_t shift = 0; shift < 3; ++shift) {
        const index_t st = shift % wt, sh = shift % wh, sw = shift % ww;
        const Csr csr = patterns::swin_3d(t, h, w, wt, wh, ww, st, sh, sw);
        spattn::validate(csr.view(), static_cast<index_t>(csr.row_offsets().size()), csr.nnz());
        const index_t tokens = t * h * w;
        std::vector<std::uint8_t> mask(tokens * tokens, 0);
        for (index_t row = 0; row < tokens; ++row)
          for (index_t k = csr.row_offsets()[row]; k < csr.row_offsets()[row + 1]; ++k)
            mask[row * tokens + csr.col_indices()[k]] = 1;
        bool same = true;
        for (index_t q = 0; q < tokens; ++q) {
          for (index_t k = 0; k < tokens; ++k) {
            const bool attends = swin_label(q / (h * w), t, wt, st) == swin_label(k / (h * w), t, wt, st) &&
                                 swin_label(q / w % h, h, wh, sh) == swin_label(k / w % h, h, wh, sh) &&
                                 swin_label(q % w, w, ww, sw) == swin_label(k % w, w, ww, sw);
            same = same && mask[q * tokens + k] == static_cast<std::uint8_t>(attends);
          }
        }
        CHECK(same);
      }
    }
  }
}

TEST(swin_3d_with_one_frame_is_swin) {
  const Csr video = patterns::swin_3d(1, 10, 7, 1, 4, 3, 0, 2, 1);
  const Csr image = patterns::swin(10, 7, 4, 3, 2, 1);
  CHECK(video.row_offsets() == image.row_offsets());
  CHECK(video.col_indices() == image.col_indices());
}

TEST(swin_3d_rejects_bad_arguments) {
  CHECK_THROWS(patterns::swin_3d(0, 4, 4, 1, 2, 2, 0, 0, 0), "T");
  CHECK_THROWS(patterns::swin_3d(4, 4, 4, 5, 2, 2, 0, 0, 0), "window_size");
  CHECK_THROWS(patterns::swin_3d(4, 4, 4, 2, 0, 2, 0, 0, 0), "window_size");
  CHECK_THROWS(patterns::swin_3d(4, 4, 4, 2, 2, 2, 0, 2, 0), "shift_size");
  CHECK_THROWS(patterns::swin_3d(4, 4, 4, 2, 2, 2, 0, 0, -1), "shift_size");
}

TEST_MAIN()

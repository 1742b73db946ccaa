// Neighborhood attention as a pattern: each token's entries are the product of one window per axis.
//
// Grids of fewer than 3 axes are padded in front with axes of size 1 and kernel 1: that changes neither
// the token numbering nor the bias index (a kernel-1 axis contributes a factor 2 * 1 - 1 = 1), and lets
// one triple loop serve every dimensionality.

#include <algorithm>
#include <array>

#include "pattern_builder.hpp"
#include "spattn/error.hpp"
#include "spattn/neighborhood.hpp"

namespace spattn::patterns {
namespace {

constexpr int max_axes = 3;

// The coordinates begin, begin + step, ..., count of them, that a query attends to along one axis.
struct AxisWindow {
  index_t begin, count, step;
};

// NATTEN's per-axis rule, written out in neighborhood.hpp (NeighborhoodAxis).
AxisWindow window_of(const NeighborhoodAxis& axis, index_t x) {
  const index_t group = x % axis.dilation, position = x / axis.dilation;
  const index_t group_length = (axis.size - group + axis.dilation - 1) / axis.dilation;
  const index_t stride_group_start = position / axis.stride * axis.stride;
  index_t first = 0, count = axis.kernel_size;
  if (axis.causal) {
    const index_t leader = std::min(stride_group_start + axis.stride - 1, group_length - 1);
    first = std::max<index_t>(leader - axis.kernel_size + 1, 0);
    count = position - first + 1;
  } else {
    const index_t leader = std::min(stride_group_start + axis.stride / 2, group_length - 1);
    first = std::min(std::max<index_t>(leader - axis.kernel_size / 2, 0), group_length - axis.kernel_size);
  }
  return {group + first * axis.dilation, count, axis.dilation};
}

void check_axes(const std::vector<NeighborhoodAxis>& axes) {
  SPATTN_CHECK(!axes.empty() && axes.size() <= max_axes, "shape: neighborhood attention takes 1 to ", max_axes,
               " axes, got ", axes.size());
  for (std::size_t i = 0; i < axes.size(); ++i) {
    const NeighborhoodAxis& axis = axes[i];
    SPATTN_CHECK(axis.size >= 1, "shape[", i, "] must be >= 1, got ", axis.size);
    SPATTN_CHECK(axis.kernel_size >= 1, "kernel_size[", i, "] must be >= 1, got ", axis.kernel_size);
    SPATTN_CHECK(axis.dilation >= 1, "dilation[", i, "] must be >= 1, got ", axis.dilation);
    SPATTN_CHECK(axis.stride >= 1 && axis.stride <= axis.kernel_size, "stride[", i, "] must be in [1, kernel_size[",
                 i, "] = ", axis.kernel_size, "], got ", axis.stride);
    // size / dilation (rounded down) is the length of the smallest dilation group.
    SPATTN_CHECK(axis.kernel_size <= axis.size / axis.dilation, "kernel_size[", i, "] = ", axis.kernel_size,
                 " does not fit axis ", i, ": with shape[", i, "] = ", axis.size, " and dilation[", i,
                 "] = ", axis.dilation, " the smallest dilation group holds ", axis.size / axis.dilation,
                 " tokens (kernel_size * dilation must be <= shape)");
  }
}

// The validated axes, padded in front to three.
std::array<NeighborhoodAxis, max_axes> padded_axes(const std::vector<NeighborhoodAxis>& axes) {
  check_axes(axes);
  std::array<NeighborhoodAxis, max_axes> padded{};
  std::copy(axes.begin(), axes.end(), padded.end() - static_cast<std::ptrdiff_t>(axes.size()));
  return padded;
}

struct Grid {
  std::array<NeighborhoodAxis, max_axes> axes;

  // The token count, after refusing grids whose pattern could not be built: rows are at most
  // prod(kernel_size) long, so this bound is checked before anything is allocated.
  index_t tokens() const {
    index_t tokens = 1, longest_row = 1;
    for (const NeighborhoodAxis& axis : axes) {
      tokens = checked_mul(tokens, axis.size, "neighborhood pattern");
      longest_row = checked_mul(longest_row, axis.kernel_size, "neighborhood pattern");
    }
    check_nnz_limit(checked_mul(tokens, longest_row, "neighborhood pattern"), "neighborhood pattern");
    return tokens;
  }
  std::array<index_t, max_axes> coordinates(index_t token) const {
    return {token / (axes[1].size * axes[2].size), token / axes[2].size % axes[1].size, token % axes[2].size};
  }
  std::array<AxisWindow, max_axes> windows(index_t token) const {
    const auto x = coordinates(token);
    return {window_of(axes[0], x[0]), window_of(axes[1], x[1]), window_of(axes[2], x[2])};
  }
  index_t row_length(index_t token) const {
    const auto w = windows(token);
    return w[0].count * w[1].count * w[2].count;
  }
};

}  // namespace

Csr neighborhood(const std::vector<NeighborhoodAxis>& axes) {
  const Grid grid{padded_axes(axes)};
  const index_t tokens = grid.tokens();
  const index_t size_1 = grid.axes[1].size, size_2 = grid.axes[2].size;
  return detail::build_by_rows(
      tokens, tokens, "neighborhood pattern", [&](index_t token) { return grid.row_length(token); },
      [&](index_t token, index_t* out) {
        const auto w = grid.windows(token);
        for (index_t a = 0, x0 = w[0].begin; a < w[0].count; ++a, x0 += w[0].step) {
          for (index_t b = 0, x1 = w[1].begin; b < w[1].count; ++b, x1 += w[1].step) {
            const index_t row_start = (x0 * size_1 + x1) * size_2;
            for (index_t c = 0, x2 = w[2].begin; c < w[2].count; ++c, x2 += w[2].step) *out++ = row_start + x2;
          }
        }
      });
}

std::vector<index_t> neighborhood_bias_index(const std::vector<NeighborhoodAxis>& axes) {
  const Grid grid{padded_axes(axes)};
  const index_t tokens = grid.tokens();
  std::vector<index_t> row_offsets(tokens + 1, 0);
#pragma omp parallel for schedule(static) if (tokens > 4096)
  for (index_t token = 0; token < tokens; ++token) row_offsets[token + 1] = grid.row_length(token);
  for (index_t token = 0; token < tokens; ++token) {
    row_offsets[token + 1] = checked_add(row_offsets[token], row_offsets[token + 1], "neighborhood pattern");
  }
  check_nnz_limit(row_offsets[tokens], "neighborhood pattern");

  // Table extent per axis: offsets (key - query) / dilation run over [-(k - 1), k - 1].
  const index_t extent_1 = 2 * grid.axes[1].kernel_size - 1, extent_2 = 2 * grid.axes[2].kernel_size - 1;
  std::vector<index_t> bias_index(row_offsets[tokens]);
#pragma omp parallel for schedule(static) if (tokens > 4096)
  for (index_t token = 0; token < tokens; ++token) {
    const auto x = grid.coordinates(token);
    const auto w = grid.windows(token);
    std::array<index_t, max_axes> first_offset{};
    for (int i = 0; i < max_axes; ++i) {
      first_offset[i] = (w[i].begin - x[i]) / grid.axes[i].dilation + grid.axes[i].kernel_size - 1;
    }
    index_t* out = bias_index.data() + row_offsets[token];
    for (index_t a = 0; a < w[0].count; ++a) {
      for (index_t b = 0; b < w[1].count; ++b) {
        const index_t partial = ((first_offset[0] + a) * extent_1 + first_offset[1] + b) * extent_2;
        for (index_t c = 0; c < w[2].count; ++c) *out++ = partial + first_offset[2] + c;
      }
    }
  }
  return bias_index;
}

}  // namespace spattn::patterns

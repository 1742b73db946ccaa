// Swin Transformer's shifted windows as a pattern, without roll, partition or mask.
//
// After roll(-shift), window w covers rolled positions [w * window, (w + 1) * window); rolled position r is
// original position (r + shift) mod n. The region mask then separates, in the last window, the tokens that
// wrapped around from those that did not. Mapped back to original positions the surviving groups are
// [0, shift), [shift, shift + window), ..., which is what group_of() computes per axis.

#include "pattern_builder.hpp"
#include "spattn/error.hpp"
#include "spattn/patterns.hpp"

namespace spattn::patterns {
namespace {

// The group of one axis that a coordinate belongs to, as the half-open range [begin, end).
struct AxisGroups {
  index_t size, window, shift;

  index_t begin(index_t x) const {
    if (x < shift) return 0;
    return shift + (x - shift) / window * window;
  }
  index_t end(index_t x) const {
    if (x < shift) return shift;
    const index_t group_end = begin(x) + window;
    return group_end < size ? group_end : size;
  }
};

void check_axis(index_t size, index_t window, index_t shift, const char* size_name, const char* axis) {
  SPATTN_CHECK(size >= 1, size_name, " must be >= 1, got ", size);
  SPATTN_CHECK(window >= 1 && window <= size, "window_size: the window must be in [1, ", size_name, " = ", size,
               "] along the ", axis, " axis, got ", window);
  SPATTN_CHECK(shift >= 0 && shift < window, "shift_size: the shift must be in [0, window_size = ", window,
               ") along the ", axis, " axis, got ", shift);
}

}  // namespace

Csr swin(index_t height, index_t width, index_t window_height, index_t window_width, index_t shift_height,
         index_t shift_width) {
  check_axis(height, window_height, shift_height, "H", "height");
  check_axis(width, window_width, shift_width, "W", "width");
  const index_t tokens = checked_mul(height, width, "swin pattern");
  const AxisGroups rows{height, window_height, shift_height};
  const AxisGroups cols{width, window_width, shift_width};
  return detail::build_by_rows(
      tokens, tokens, "swin pattern",
      [&](index_t token) {
        const index_t i = token / width, j = token % width;
        return (rows.end(i) - rows.begin(i)) * (cols.end(j) - cols.begin(j));
      },
      [&](index_t token, index_t* out) {
        const index_t i = token / width, j = token % width;
        const index_t j_begin = cols.begin(j), j_end = cols.end(j);
        for (index_t ii = rows.begin(i); ii < rows.end(i); ++ii) {
          for (index_t jj = j_begin; jj < j_end; ++jj) *out++ = ii * width + jj;
        }
      });
}

}  // namespace spattn::patterns

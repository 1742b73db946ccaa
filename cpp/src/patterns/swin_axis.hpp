#pragma once
// One axis of Swin's shifted windows, shared by the 2-D (swin.cpp) and 3-D (swin_3d.cpp) patterns.
//
// After roll(-shift), window w covers rolled positions [w * window, (w + 1) * window); rolled position r is
// original position (r + shift) mod n. The region mask then separates, in the last window, the tokens that
// wrapped around from those that did not. Mapped back to original positions the surviving groups are
// [0, shift), [shift, shift + window), ..., border groups partial.

#include "spattn/checked_math.hpp"
#include "spattn/error.hpp"

namespace spattn::detail {

// The group of one axis that a coordinate belongs to, as the half-open range [begin, end).
struct SwinAxis {
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
  index_t length(index_t x) const { return end(x) - begin(x); }
};

// Requires 1 <= window <= size and 0 <= shift < window; messages name window_size / shift_size.
inline SwinAxis checked_swin_axis(index_t size, index_t window, index_t shift, const char* size_name,
                                  const char* axis) {
  SPATTN_CHECK(size >= 1, size_name, " must be >= 1, got ", size);
  SPATTN_CHECK(window >= 1 && window <= size, "window_size: the window must be in [1, ", size_name, " = ", size,
               "] along the ", axis, " axis, got ", window);
  SPATTN_CHECK(shift >= 0 && shift < window, "shift_size: the shift must be in [0, window_size = ", window,
               ") along the ", axis, " axis, got ", shift);
  return {size, window, shift};
}

}  // namespace spattn::detail

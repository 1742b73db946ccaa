// Video Swin Transformer's 3-D shifted windows as a pattern, without roll, partition or mask.
//
// Video Swin rolls the T x H x W volume by -shift on all three axes, cuts window_t x window_h x window_w
// windows and masks pairs from different regions, the regions being per axis the slices (0, -window),
// (-window, -shift), (-shift, None) of the rolled axis. Exactly as for the 2-D swin pattern (swin.cpp),
// each axis maps back to the un-rolled groups [0, shift), [shift, shift + window), ..., and two tokens attend
// to each other when they share the group on all three axes.

#include <array>

#include "pattern_builder.hpp"
#include "swin_axis.hpp"
#include "spattn/error.hpp"
#include "spattn/neighborhood.hpp"

namespace spattn::patterns {

Csr swin_3d(index_t frames, index_t height, index_t width, index_t window_frames, index_t window_height,
            index_t window_width, index_t shift_frames, index_t shift_height, index_t shift_width) {
  const std::array<detail::SwinAxis, 3> axes = {
      detail::checked_swin_axis(frames, window_frames, shift_frames, "T", "time"),
      detail::checked_swin_axis(height, window_height, shift_height, "H", "height"),
      detail::checked_swin_axis(width, window_width, shift_width, "W", "width")};
  const index_t tokens = checked_mul(checked_mul(frames, height, "swin_3d pattern"), width, "swin_3d pattern");
  const auto coordinates = [&](index_t token) {
    return std::array<index_t, 3>{token / (height * width), token / width % height, token % width};
  };
  return detail::build_by_rows(
      tokens, tokens, "swin_3d pattern",
      [&](index_t token) {
        const auto x = coordinates(token);
        return axes[0].length(x[0]) * axes[1].length(x[1]) * axes[2].length(x[2]);
      },
      [&](index_t token, index_t* out) {
        const auto x = coordinates(token);
        const index_t i_begin = axes[1].begin(x[1]), i_end = axes[1].end(x[1]);
        const index_t j_begin = axes[2].begin(x[2]), j_end = axes[2].end(x[2]);
        for (index_t t = axes[0].begin(x[0]); t < axes[0].end(x[0]); ++t) {
          for (index_t i = i_begin; i < i_end; ++i) {
            for (index_t j = j_begin; j < j_end; ++j) *out++ = (t * height + i) * width + j;
          }
        }
      });
}

}  // namespace spattn::patterns

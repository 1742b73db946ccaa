// Swin Transformer's shifted windows as a pattern, without roll, partition or mask: a token attends to
// the tokens in the same group on both axes (see swin_axis.hpp).

#include "pattern_builder.hpp"
#include "swin_axis.hpp"
#include "spattn/error.hpp"
#include "spattn/patterns.hpp"

namespace spattn::patterns {

Csr swin(index_t height, index_t width, index_t window_height, index_t window_width, index_t shift_height,
         index_t shift_width) {
  const detail::SwinAxis rows = detail::checked_swin_axis(height, window_height, shift_height, "H", "height");
  const detail::SwinAxis cols = detail::checked_swin_axis(width, window_width, shift_width, "W", "width");
  const index_t tokens = checked_mul(height, width, "swin pattern");
  return detail::build_by_rows(
      tokens, tokens, "swin pattern",
      [&](index_t token) {
        const index_t i = token / width, j = token % width;
        return rows.length(i) * cols.length(j);
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

// Block layouts of the sparse transformers: small layouts written out by hand, sweeps against a literal
// transcription of the reference (DeepSpeed's / xformers' SparsityConfig loops, Python slices and all),
// the random blocks' counts and determinism, and bad arguments.

#include <algorithm>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "check.hpp"
#include "spattn/spattn.hpp"

using spattn::index_t;
using namespace spattn::layouts;

namespace {

using Dense = std::vector<std::vector<int>>;

Dense to_dense(const BlockLayout& layout) {
  Dense dense(layout.block_rows, std::vector<int>(layout.block_cols, 0));
  for (index_t r = 0; r < layout.block_rows; ++r) {
    for (index_t c = 0; c < layout.block_cols; ++c) dense[r][c] = layout.at(r, c);
  }
  return dense;
}

// A layout written as one string of '0'/'1' per block row.
Dense rows(std::vector<std::string> text) {
  Dense dense;
  for (const auto& line : text) {
    dense.emplace_back();
    for (char ch : line) dense.back().push_back(ch == '1');
  }
  return dense;
}

bool well_formed(const BlockLayout& layout, index_t n) {
  return layout.block_rows == n && layout.block_cols == n &&
         layout.blocks.size() == static_cast<std::size_t>(n * n) &&
         std::all_of(layout.blocks.begin(), layout.blocks.end(), [](auto b) { return b == 0 || b == 1; });
}

// ---- the reference, transcribed loop by loop -----------------------------------------------------------

// layout[row_begin:row_end, col_begin:col_end] = 1 with Python's slice rules (negative = from the end).
void py_fill(Dense& d, index_t row_begin, index_t row_end, index_t col_begin, index_t col_end) {
  const index_t n = static_cast<index_t>(d.size());
  auto clip = [n](index_t x) { return x < 0 ? std::max<index_t>(0, x + n) : std::min(x, n); };
  for (index_t r = clip(row_begin); r < clip(row_end); ++r) {
    for (index_t c = clip(col_begin); c < clip(col_end); ++c) d[r][c] = 1;
  }
}

void tril(Dense& d) {
  for (std::size_t r = 0; r < d.size(); ++r) {
    for (std::size_t c = r + 1; c < d.size(); ++c) d[r][c] = 0;
  }
}

Dense reference_fixed(index_t n, index_t local, index_t global, bool uni, bool horizontal, index_t patterns,
                      index_t h) {
  Dense d(n, std::vector<int>(n, 0));
  for (index_t i = 0; i < n; i += local) {
    const index_t end = std::min(i + local, n);
    for (index_t row = i; row < end; ++row) {
      for (index_t col = i; col < (uni ? row + 1 : end); ++col) d[row][col] = 1;
    }
  }
  const index_t first = local - (1 + h % patterns) * global;
  index_t end = n - n % local;
  for (index_t i = first; i < end; i += local) {
    py_fill(d, uni ? i : 0, n, i, i + global);
    if (horizontal) py_fill(d, i, i + global, 0, n);
  }
  if (end < n) {
    const index_t start = std::min(end + first, n - global);
    end = start + global;
    py_fill(d, uni ? start : 0, n, start, end);
    if (horizontal) py_fill(d, start, end, 0, n);
  }
  return d;
}

// Variable without random blocks.
Dense reference_variable(index_t n, std::vector<index_t> windows, std::vector<index_t> starts,
                         std::optional<std::vector<index_t>> ends, bool uni, bool horizontal) {
  Dense d(n, std::vector<int>(n, 0));
  index_t start = 0, end = 0, size = 0;
  for (index_t s : windows) {
    size = s;
    end = std::min(end + s, n);
    for (index_t row = start; row < end; ++row) {
      for (index_t col = start; col < (uni ? row + 1 : end); ++col) d[row][col] = 1;
    }
    start += s;
  }
  for (index_t i = start; i < n; i += size) {
    end = std::min(i + size, n);
    for (index_t row = i; row < end; ++row) {
      for (index_t col = i; col < (uni ? row + 1 : end); ++col) d[row][col] = 1;
    }
  }
  for (std::size_t k = 0; k < starts.size(); ++k) {
    const index_t begin = starts[k];
    if (begin >= n) continue;
    const index_t stop = ends ? std::min((*ends)[k], n) : begin + 1;
    if (horizontal) py_fill(d, begin, stop, 0, n);
    py_fill(d, uni ? begin : 0, n, begin, stop);
  }
  return d;
}

void reference_sliding(Dense& d, index_t window) {
  const index_t n = static_cast<index_t>(d.size()), w = window / 2;
  for (index_t row = 0; row < n; ++row) {
    py_fill(d, row, row + 1, std::max<index_t>(0, row - w), std::min(row + w + 1, n));
  }
}

// BigBird without random blocks.
Dense reference_bigbird(index_t n, index_t window, index_t global, bool uni) {
  Dense d(n, std::vector<int>(n, 0));
  reference_sliding(d, window);
  py_fill(d, 0, global, 0, n);
  py_fill(d, 0, n, 0, global);
  if (uni) tril(d);
  return d;
}

Dense reference_longformer(index_t n, index_t window, std::vector<index_t> starts,
                           std::optional<std::vector<index_t>> ends, bool uni) {
  Dense d(n, std::vector<int>(n, 0));
  reference_sliding(d, window);
  for (std::size_t k = 0; k < starts.size(); ++k) {
    const index_t begin = starts[k];
    if (begin >= n) continue;
    const index_t stop = ends ? std::min((*ends)[k], n) : begin + 1;
    py_fill(d, begin, stop, 0, n);
    py_fill(d, 0, n, begin, stop);
  }
  if (uni) tril(d);
  return d;
}

const Attention bi = Attention::bidirectional, uni = Attention::unidirectional;

}  // namespace

// ---- hand-derived layouts ------------------------------------------------------------------------------

TEST(fixed_by_hand) {
  // Windows [0, 4) and [4, 8); the last block of each window (3 and 7) is global.
  CHECK(to_dense(fixed(8)) == rows({"11110001", "11110001", "11110001", "11110001",  //
                                     "00011111", "00011111", "00011111", "00011111"}));
  CHECK(to_dense(fixed(8, 4, 1, uni)) == rows({"10000000", "11000000", "11100000", "11110000",  //
                                               "00011000", "00011100", "00011110", "00011111"}));
  // A short last window [4, 6): its global block sits 3 blocks in, pulled back to block 5.
  CHECK(to_dense(fixed(6)) == rows({"111101", "111101", "111101", "111101", "000111", "000111"}));
  // Horizontal: the global blocks 3 and 7 also attend to everything.
  CHECK(to_dense(fixed(8, 4, 1, bi, true)) == rows({"11110001", "11110001", "11110001", "11111111",  //
                                                    "00011111", "00011111", "00011111", "11111111"}));
  // Two global patterns: head 1 uses the second block from each window's end (2 and 6).
  CHECK(to_dense(fixed(8, 4, 1, bi, false, 2, 1)) == rows({"11110010", "11110010", "11110010", "11110010",  //
                                                           "00101111", "00101111", "00101111", "00101111"}));
  CHECK(to_dense(fixed(8, 4, 1, bi, false, 2, 3)) == to_dense(fixed(8, 4, 1, bi, false, 2, 1)));
  CHECK(to_dense(fixed(0)).empty());
}

TEST(variable_by_hand) {
  // Windows of 2 then 3 blocks, the last size repeating: [0, 2), [2, 5), [5, 7); global block 0.
  CHECK(to_dense(variable(7, 0, {2, 3}, {0})) == rows({"1100000", "1100000", "1011100", "1011100", "1011100",
                                                      "1000011", "1000011"}));
  // Global range [2, 4) with horizontal attention, windows of 1.
  CHECK(to_dense(variable(5, 0, {1}, {2}, std::vector<index_t>{4}, bi, true)) ==
        rows({"10110", "01110", "11111", "11111", "00111"}));
  // Unidirectional: global column 1 only from row 1 on.
  CHECK(to_dense(variable(4, 0, {4}, {1}, std::nullopt, uni)) == rows({"1000", "1100", "1110", "1111"}));
}

TEST(bigbird_by_hand) {
  CHECK(to_dense(bigbird(5, 0, 3, 1)) == rows({"11111", "11100", "11110", "10111", "10011"}));
  CHECK(to_dense(bigbird(5, 0, 3, 1, uni)) == rows({"10000", "11000", "11100", "10110", "10011"}));
  // The half width is window / 2: a window of 2 reaches one block each side like 3, a window of 1 none.
  CHECK(to_dense(bigbird(3, 0, 2, 0)) == rows({"110", "111", "011"}));
  CHECK(to_dense(bigbird(3, 0, 1, 0)) == rows({"100", "010", "001"}));
}

TEST(longformer_by_hand) {
  CHECK(to_dense(longformer(5, 3, {2})) == rows({"11100", "11100", "11111", "00111", "00111"}));
  CHECK(to_dense(longformer(5, 1, {3}, std::vector<index_t>{5}, uni)) ==
        rows({"10000", "01000", "00100", "11110", "11111"}));
  // Global blocks past the end are ignored.
  CHECK(to_dense(longformer(3, 1, {7})) == rows({"100", "010", "001"}));
}

// ---- sweeps against the transcribed reference ----------------------------------------------------------

TEST(fixed_matches_reference) {
  for (index_t n = 0; n <= 13; ++n) {
    for (index_t local = 1; local <= 6; ++local) {
      for (index_t global = 1; global <= local; ++global) {
        if (local % global) continue;
        for (index_t patterns = 1; patterns <= local / global; ++patterns) {
          for (index_t head = 0; head < 3; ++head) {
            for (int direction = 0; direction < 2; ++direction) {
              for (int horizontal = 0; horizontal <= (direction == 0); ++horizontal) {
                const BlockLayout layout =
                    fixed(n, local, global, direction ? uni : bi, horizontal, patterns, head);
                CHECK(well_formed(layout, n));
                CHECK(to_dense(layout) == reference_fixed(n, local, global, direction, horizontal, patterns, head));
              }
            }
          }
        }
      }
    }
  }
}

TEST(variable_matches_reference) {
  const std::vector<std::vector<index_t>> window_lists = {{1}, {4}, {2, 3}, {3, 1, 2}, {20}};
  const std::vector<std::vector<index_t>> global_lists = {{}, {0}, {1, 5}, {3, 30}};
  for (index_t n = 0; n <= 11; ++n) {
    for (const auto& windows : window_lists) {
      for (const auto& globals : global_lists) {
        for (int with_ends = 0; with_ends < 2; ++with_ends) {
          std::optional<std::vector<index_t>> ends;
          if (with_ends) {
            ends.emplace();
            for (index_t g : globals) ends->push_back(g + 2);
          }
          for (int direction = 0; direction < 2; ++direction) {
            for (int horizontal = 0; horizontal <= (direction == 0); ++horizontal) {
              const BlockLayout layout = variable(n, 0, windows, globals, ends, direction ? uni : bi, horizontal);
              CHECK(well_formed(layout, n));
              CHECK(to_dense(layout) == reference_variable(n, windows, globals, ends, direction, horizontal));
            }
          }
        }
      }
    }
  }
}

TEST(bigbird_and_longformer_match_reference) {
  for (index_t n = 0; n <= 12; ++n) {
    for (index_t window = 0; window <= n; ++window) {
      for (int direction = 0; direction < 2; ++direction) {
        for (index_t global = 0; global <= n; ++global) {
          const BlockLayout layout = bigbird(n, 0, window, global, direction ? uni : bi);
          CHECK(well_formed(layout, n));
          CHECK(to_dense(layout) == reference_bigbird(n, window, global, direction));
        }
        for (const auto& globals : std::vector<std::vector<index_t>>{{}, {0}, {2, 9}, {n}}) {
          std::vector<index_t> ends;
          for (index_t g : globals) ends.push_back(g + 3);
          CHECK(to_dense(longformer(n, window, globals, std::nullopt, direction ? uni : bi)) ==
                reference_longformer(n, window, globals, std::nullopt, direction));
          CHECK(to_dense(longformer(n, window, globals, ends, direction ? uni : bi)) ==
                reference_longformer(n, window, globals, ends, direction));
        }
      }
    }
  }
}

// ---- random blocks -------------------------------------------------------------------------------------

TEST(random_blocks_add_the_right_number_per_row) {
  for (index_t n : {1, 5, 16, 40}) {
    for (index_t random : {index_t{0}, index_t{1}, index_t{3}, n}) {
      if (random > n) continue;
      for (std::uint64_t seed : {0u, 1u, 12345u}) {
        // Windows of one block and no global blocks: each row is its diagonal plus the draw.
        const Dense with_diagonal = to_dense(variable(n, random, {1}, {}, std::nullopt, bi, false, seed));
        const Dense diagonal_only = reference_variable(n, {1}, {}, std::nullopt, false, false);
        for (index_t r = 0; r < n; ++r) {
          int total = 0;
          for (index_t c = 0; c < n; ++c) {
            total += with_diagonal[r][c];
            CHECK(with_diagonal[r][c] >= diagonal_only[r][c]);
          }
          CHECK(total == random + 1 || total == random);  // a draw may land on the diagonal
        }
        if (random) {
          const Dense bird = to_dense(bigbird(n, random, 0, 0, bi, seed));
          for (index_t r = 0; r < n; ++r) {
            int total = 0;
            for (index_t c = 0; c < n; ++c) total += bird[r][c];
            CHECK(total == random || total == random + 1);
            CHECK(bird[r][r] == 1);
          }
        }
      }
    }
  }
}

TEST(bigbird_unidirectional_draws_from_the_past) {
  for (std::uint64_t seed = 0; seed < 20; ++seed) {
    const Dense bird = to_dense(bigbird(9, 1, 0, 0, uni, seed));
    const Dense det = reference_bigbird(9, 0, 0, true);
    int off_diagonal = 0;
    for (index_t r = 0; r < 9; ++r) {
      for (index_t c = r + 1; c < 9; ++c) CHECK(bird[r][c] == 0);
      for (index_t c = 0; c < r; ++c) off_diagonal += bird[r][c];
      CHECK(bird[r][r] == det[r][r]);
    }
    CHECK(off_diagonal <= 8);
  }
}

TEST(random_blocks_are_deterministic_per_seed) {
  CHECK(bigbird(64, 3, 3, 1, bi, 7).blocks == bigbird(64, 3, 3, 1, bi, 7).blocks);
  CHECK(bigbird(64, 3, 3, 1, bi, 7).blocks != bigbird(64, 3, 3, 1, bi, 8).blocks);
  CHECK(variable(64, 2, {4}, {0}, std::nullopt, bi, false, 3).blocks ==
        variable(64, 2, {4}, {0}, std::nullopt, bi, false, 3).blocks);
  CHECK(variable(64, 2, {4}, {0}, std::nullopt, bi, false, 3).blocks !=
        variable(64, 2, {4}, {0}, std::nullopt, bi, false, 4).blocks);
  // Random blocks only add to the deterministic part.
  const Dense with_random = to_dense(bigbird(30, 2, 3, 1, bi, 5));
  const Dense without = reference_bigbird(30, 3, 1, false);
  for (index_t r = 0; r < 30; ++r) {
    for (index_t c = 0; c < 30; ++c) CHECK(with_random[r][c] >= without[r][c]);
  }
}

TEST(random_draws_are_uniform_enough) {
  // Over many seeds, each column of a 1-of-8 draw should come up about 1/8 of the time.
  std::vector<int> hits(8, 0);
  const int trials = 4000;
  for (int seed = 0; seed < trials; ++seed) {
    const Dense bird = to_dense(bigbird(8, 1, 0, 0, bi, static_cast<std::uint64_t>(seed)));
    for (index_t c = 0; c < 8; ++c) hits[c] += bird[0][c] && c != 0;
  }
  // Column 0 is row 0's diagonal; the others should each be hit about trials / 8 = 500 times.
  for (index_t c = 1; c < 8; ++c) CHECK(hits[c] > 400 && hits[c] < 600);
}

// ---- bad arguments -------------------------------------------------------------------------------------

TEST(bad_arguments_name_the_argument) {
  CHECK_THROWS(parse_attention("causal"), "attention");
  CHECK(parse_attention("unidirectional") == uni);
  CHECK_THROWS(fixed(-1), "num_blocks");
  CHECK_THROWS(fixed(8, 0), "num_local_blocks");
  CHECK_THROWS(fixed(8, 4, 0), "num_global_blocks");
  CHECK_THROWS(fixed(8, 4, 3), "num_global_blocks");
  CHECK_THROWS(fixed(8, 4, 1, uni, true), "horizontal_global_attention");
  CHECK_THROWS(fixed(8, 4, 2, bi, false, 3), "num_different_global_patterns");
  CHECK_THROWS(fixed(8, 4, 1, bi, false, 0), "num_different_global_patterns");
  CHECK_THROWS(fixed(8, 4, 1, bi, false, 1, -1), "head");
  CHECK_THROWS(fixed(index_t{1} << 20), "num_blocks");
  CHECK_THROWS(fixed(index_t{1} << 40), "too large");

  CHECK_THROWS(variable(4, 5), "num_random_blocks");
  CHECK_THROWS(variable(4, -1), "num_random_blocks");
  CHECK_THROWS(variable(4, 0, {}), "local_window_blocks");
  CHECK_THROWS(variable(4, 0, {2, 0}), "local_window_blocks[1]");
  CHECK_THROWS(variable(4, 0, {2}, {-1}), "global_block_indices[0]");
  CHECK_THROWS(variable(4, 0, {2}, {0, 1}, std::vector<index_t>{2}), "global_block_end_indices");
  CHECK_THROWS(variable(4, 0, {2}, {0, 2}, std::vector<index_t>{1, 2}), "global_block_end_indices[1]");
  CHECK_THROWS(variable(4, 0, {2}, {0}, std::nullopt, uni, true), "horizontal_global_attention");

  CHECK_THROWS(bigbird(4, 5), "num_random_blocks");
  CHECK_THROWS(bigbird(4, 1, 5), "num_sliding_window_blocks");
  CHECK_THROWS(bigbird(4, 1, -1), "num_sliding_window_blocks");
  CHECK_THROWS(bigbird(4, 1, 3, 5), "num_global_blocks");
  CHECK_THROWS(bigbird(4, 2, 3, 1, uni), "num_random_blocks");
  CHECK(well_formed(bigbird(0, 0, 0, 0, uni), 0));

  CHECK_THROWS(longformer(4, 5), "num_sliding_window_blocks");
  CHECK_THROWS(longformer(4, 3, {-2}), "global_block_indices[0]");
  CHECK_THROWS(longformer(4, 3, {1}, std::vector<index_t>{1}), "global_block_end_indices[0]");
  // Huge but valid indices are simply past the layout.
  CHECK(well_formed(longformer(4, 3, {std::numeric_limits<index_t>::max()}), 4));
}

TEST_MAIN()

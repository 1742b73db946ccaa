// Block layouts of the sparse transformers, one head at a time, as DeepSpeed's and xformers'
// SparsityConfig classes build them (same argument names, defaults and corner cases), with random blocks
// drawn from a seeded generator instead of Python's global random state.

#include <algorithm>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <string>

#include "spattn/block_layouts.hpp"
#include "spattn/checked_math.hpp"
#include "spattn/error.hpp"

namespace spattn::layouts {
namespace {

// A layout is dense (num_blocks^2 bytes); past 2^36 bytes (num_blocks > 262,144) it is certainly a
// mistake, so it is refused before the allocation instead of failing inside it.
constexpr index_t max_layout_blocks = index_t{1} << 36;

// A square layout under construction. Every generator only ever sets blocks, so the parts of a layout
// can be written in any order.
class Grid {
 public:
  explicit Grid(index_t num_blocks) : n_(num_blocks) {
    SPATTN_CHECK(num_blocks >= 0, "num_blocks must be >= 0, got ", num_blocks);
    const index_t total = checked_mul(num_blocks, num_blocks, "block layout");
    SPATTN_CHECK(total <= max_layout_blocks, "num_blocks = ", num_blocks, " is too large: the layout would have ",
                 total, " blocks, more than the limit of ", max_layout_blocks);
    blocks_.assign(static_cast<std::size_t>(total), 0);
  }

  index_t size() const { return n_; }
  void set(index_t row, index_t col) { blocks_[row * n_ + col] = 1; }
  // Sets rows [row_begin, row_end) x columns [col_begin, col_end).
  void fill(index_t row_begin, index_t row_end, index_t col_begin, index_t col_end) {
    for (index_t row = row_begin; row < row_end; ++row) {
      std::fill(blocks_.begin() + row * n_ + col_begin, blocks_.begin() + row * n_ + col_end, std::uint8_t{1});
    }
  }
  // A local window [begin, end) attending to itself: everything, or only col <= row when causal.
  void window(index_t begin, index_t end, bool causal) {
    for (index_t row = begin; row < end; ++row) fill(row, row + 1, begin, causal ? row + 1 : end);
  }
  // BigBird's and Longformer's sliding window: |row - col| <= half_width.
  void sliding_window(index_t half_width) {
    for (index_t row = 0; row < n_; ++row) {
      const index_t begin = std::max<index_t>(0, row - half_width);
      const index_t end = half_width >= n_ - row ? n_ : row + half_width + 1;
      fill(row, row + 1, begin, end);
    }
  }
  // Zeroes everything above the diagonal: the unidirectional variants apply torch.tril last.
  void keep_lower_triangle() {
    for (index_t row = 0; row < n_; ++row) {
      std::fill(blocks_.begin() + row * n_ + row + 1, blocks_.begin() + (row + 1) * n_, std::uint8_t{0});
    }
  }

  BlockLayout release() { return {n_, n_, std::move(blocks_)}; }

 private:
  index_t n_;
  std::vector<std::uint8_t> blocks_;
};

// Draws distinct random columns per row. std::uniform_int_distribution is not used: its output differs
// between standard libraries, and a seed must give the same layout everywhere.
class RandomBlocks {
 public:
  explicit RandomBlocks(std::uint64_t seed) : engine_(seed) {}

  // Sets `count` distinct columns drawn uniformly from [0, population) in `row` (partial Fisher-Yates).
  void draw(Grid& grid, index_t row, index_t population, index_t count) {
    pool_.resize(static_cast<std::size_t>(population));
    std::iota(pool_.begin(), pool_.end(), index_t{0});
    for (index_t taken = 0; taken < count; ++taken) {
      std::swap(pool_[taken], pool_[taken + below(population - taken)]);
      grid.set(row, pool_[taken]);
    }
  }

 private:
  // Uniform in [0, bound) by rejection: only the top sliver of 64-bit values that would bias x % bound
  // is redrawn.
  index_t below(index_t bound) {
    const std::uint64_t n = static_cast<std::uint64_t>(bound);
    const std::uint64_t max = std::numeric_limits<std::uint64_t>::max();
    const std::uint64_t limit = max - max % n;
    std::uint64_t value = engine_();
    while (value >= limit) value = engine_();
    return static_cast<index_t>(value % n);
  }

  std::mt19937_64 engine_;
  std::vector<index_t> pool_;
};

void check_count(index_t value, index_t num_blocks, const char* name) {
  SPATTN_CHECK(value >= 0, name, " must be >= 0, got ", value);
  SPATTN_CHECK(value <= num_blocks, name, " = ", value, " must be <= num_blocks = ", num_blocks);
}

// The global block ranges [begin, end) of Variable and Longformer: single blocks, or explicit ranges.
struct GlobalRange {
  index_t begin, end;
};

std::vector<GlobalRange> global_ranges(const std::vector<index_t>& starts,
                                       const std::optional<std::vector<index_t>>& ends) {
  std::vector<GlobalRange> ranges;
  for (std::size_t k = 0; k < starts.size(); ++k) {
    SPATTN_CHECK(starts[k] >= 0, "global_block_indices[", k, "] must be >= 0, got ", starts[k]);
  }
  if (!ends) {
    // The clamp only keeps + 1 from overflowing: such a block lies past any layout and is ignored.
    for (index_t start : starts) ranges.push_back({start, std::min(start, max_layout_blocks) + 1});
    return ranges;
  }
  SPATTN_CHECK(ends->size() == starts.size(), "global_block_end_indices must have as many entries as "
               "global_block_indices (", starts.size(), "), got ", ends->size());
  for (std::size_t k = 0; k < starts.size(); ++k) {
    SPATTN_CHECK(starts[k] < (*ends)[k], "global_block_end_indices[", k, "] = ", (*ends)[k],
                 " must be larger than global_block_indices[", k, "] = ", starts[k]);
    ranges.push_back({starts[k], (*ends)[k]});
  }
  return ranges;
}

// Global blocks [begin, end), clipped to the layout (those starting past it are ignored): attended by
// every row (from `begin` on when causal) and, when horizontal, attending to every column.
void mark_global(Grid& grid, GlobalRange range, bool causal, bool horizontal) {
  const index_t n = grid.size();
  if (range.begin >= n) return;
  const index_t end = std::min(range.end, n);
  grid.fill(causal ? range.begin : 0, n, range.begin, end);
  if (horizontal) grid.fill(range.begin, end, 0, n);
}

void check_horizontal(Attention attention, bool horizontal_global_attention) {
  SPATTN_CHECK(!(horizontal_global_attention && attention == Attention::unidirectional),
               "horizontal_global_attention requires attention = 'bidirectional'");
}

}  // namespace

Attention parse_attention(std::string_view name) {
  if (name == "bidirectional") return Attention::bidirectional;
  if (name == "unidirectional") return Attention::unidirectional;
  detail::throw_error("attention must be 'bidirectional' or 'unidirectional', got '", std::string(name), "'");
}

BlockLayout fixed(index_t num_blocks, index_t num_local_blocks, index_t num_global_blocks, Attention attention,
                  bool horizontal_global_attention, index_t num_different_global_patterns, index_t head) {
  SPATTN_CHECK(num_local_blocks >= 1, "num_local_blocks must be >= 1, got ", num_local_blocks);
  SPATTN_CHECK(num_global_blocks >= 1, "num_global_blocks must be >= 1, got ", num_global_blocks);
  SPATTN_CHECK(num_local_blocks % num_global_blocks == 0, "num_local_blocks = ", num_local_blocks,
               " must be divisible by num_global_blocks = ", num_global_blocks);
  check_horizontal(attention, horizontal_global_attention);
  const index_t groups = num_local_blocks / num_global_blocks;
  SPATTN_CHECK(num_different_global_patterns >= 1 && num_different_global_patterns <= groups,
               "num_different_global_patterns must be in [1, num_local_blocks / num_global_blocks = ", groups,
               "], got ", num_different_global_patterns);
  SPATTN_CHECK(head >= 0, "head must be >= 0, got ", head);
  Grid grid(num_blocks);
  const bool causal = attention == Attention::unidirectional;

  for (index_t begin = 0; begin < num_blocks;) {
    const index_t end = begin + std::min(num_local_blocks, num_blocks - begin);
    grid.window(begin, end, causal);
    begin = end;
  }

  const index_t offset = num_local_blocks - (1 + head % num_different_global_patterns) * num_global_blocks;
  const index_t full_windows_end = num_blocks - num_blocks % num_local_blocks;
  for (index_t begin = offset; begin < full_windows_end; begin += num_local_blocks) {
    mark_global(grid, {begin, begin + num_global_blocks}, causal, horizontal_global_attention);
  }
  if (full_windows_end < num_blocks) {
    const index_t begin = std::min(full_windows_end + offset, num_blocks - num_global_blocks);
    // With fewer blocks than num_global_blocks, begin is negative and the reference indexes with a
    // Python slice, which counts a negative start from the end (and clips it at 0).
    const index_t slice_begin = begin >= 0 ? begin : std::max<index_t>(0, begin + num_blocks);
    mark_global(grid, {slice_begin, begin + num_global_blocks}, causal, horizontal_global_attention);
  }
  return grid.release();
}

BlockLayout variable(index_t num_blocks, index_t num_random_blocks, const std::vector<index_t>& local_window_blocks,
                     const std::vector<index_t>& global_block_indices,
                     const std::optional<std::vector<index_t>>& global_block_end_indices, Attention attention,
                     bool horizontal_global_attention, std::uint64_t seed) {
  SPATTN_CHECK(!local_window_blocks.empty(), "local_window_blocks must have at least one entry");
  for (std::size_t k = 0; k < local_window_blocks.size(); ++k) {
    SPATTN_CHECK(local_window_blocks[k] >= 1, "local_window_blocks[", k, "] must be >= 1, got ",
                 local_window_blocks[k]);
  }
  const std::vector<GlobalRange> globals = global_ranges(global_block_indices, global_block_end_indices);
  check_horizontal(attention, horizontal_global_attention);
  Grid grid(num_blocks);
  check_count(num_random_blocks, num_blocks, "num_random_blocks");
  const bool causal = attention == Attention::unidirectional;

  // Random blocks ignore the attention direction, as in the reference.
  RandomBlocks random(seed);
  for (index_t row = 0; row < num_blocks; ++row) random.draw(grid, row, num_blocks, num_random_blocks);

  // Windows of the listed sizes, then the last size repeated to the end.
  index_t begin = 0;
  auto next_window = [&](index_t size) {
    const index_t end = size >= num_blocks - begin ? num_blocks : begin + size;
    grid.window(begin, end, causal);
    begin = end;
  };
  for (index_t size : local_window_blocks) next_window(size);
  while (begin < num_blocks) next_window(local_window_blocks.back());

  for (GlobalRange range : globals) mark_global(grid, range, causal, horizontal_global_attention);
  return grid.release();
}

BlockLayout bigbird(index_t num_blocks, index_t num_random_blocks, index_t num_sliding_window_blocks,
                    index_t num_global_blocks, Attention attention, std::uint64_t seed) {
  Grid grid(num_blocks);
  check_count(num_random_blocks, num_blocks, "num_random_blocks");
  check_count(num_sliding_window_blocks, num_blocks, "num_sliding_window_blocks");
  check_count(num_global_blocks, num_blocks, "num_global_blocks");
  const bool causal = attention == Attention::unidirectional;
  // The reference draws row r's random blocks from [0, r] and fails on row 0 for more than one.
  SPATTN_CHECK(!(causal && num_blocks >= 1 && num_random_blocks > 1), "num_random_blocks = ", num_random_blocks,
               " must be <= 1 with attention = 'unidirectional': the first block row has only one block to "
               "draw from");

  RandomBlocks random(seed);
  for (index_t row = 0; row < num_blocks; ++row) {
    random.draw(grid, row, causal ? row + 1 : num_blocks, num_random_blocks);
  }
  grid.sliding_window(num_sliding_window_blocks / 2);
  grid.fill(0, num_global_blocks, 0, num_blocks);
  grid.fill(0, num_blocks, 0, num_global_blocks);
  if (causal) grid.keep_lower_triangle();
  return grid.release();
}

BlockLayout longformer(index_t num_blocks, index_t num_sliding_window_blocks,
                       const std::vector<index_t>& global_block_indices,
                       const std::optional<std::vector<index_t>>& global_block_end_indices, Attention attention) {
  const std::vector<GlobalRange> globals = global_ranges(global_block_indices, global_block_end_indices);
  Grid grid(num_blocks);
  check_count(num_sliding_window_blocks, num_blocks, "num_sliding_window_blocks");

  grid.sliding_window(num_sliding_window_blocks / 2);
  for (GlobalRange range : globals) mark_global(grid, range, /*causal=*/false, /*horizontal=*/true);
  if (attention == Attention::unidirectional) grid.keep_lower_triangle();
  return grid.release();
}

}  // namespace spattn::layouts

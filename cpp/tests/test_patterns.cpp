// Pattern generators against brute-force definitions written independently of the generators.

#include <chrono>
#include <cmath>
#include <cstdlib>

#include "check.hpp"
#include "spattn/spattn.hpp"

using spattn::Csr;
using spattn::index_t;
namespace patterns = spattn::patterns;

namespace {

template <typename Predicate>
bool equals_definition(const Csr& csr, index_t rows, index_t cols, Predicate attends) {
  spattn::validate(csr.view(), static_cast<index_t>(csr.row_offsets().size()), csr.nnz());
  if (csr.rows() != rows || csr.cols() != cols) return false;
  std::vector<std::uint8_t> mask(rows * cols, 0);
  for (index_t row = 0; row < rows; ++row)
    for (index_t k = csr.row_offsets()[row]; k < csr.row_offsets()[row + 1]; ++k)
      mask[row * cols + csr.col_indices()[k]] = 1;
  for (index_t r = 0; r < rows; ++r)
    for (index_t c = 0; c < cols; ++c)
      if (mask[r * cols + c] != static_cast<std::uint8_t>(attends(r, c))) {
        std::printf("  mismatch at (%lld, %lld)\n", static_cast<long long>(r), static_cast<long long>(c));
        return false;
      }
  return true;
}

// Swin's own definition: roll by -shift, partition into windows, label regions of the last window.
int swin_label(index_t x, index_t size, index_t window, index_t shift) {
  const index_t rolled = ((x - shift) % size + size) % size;
  const index_t window_index = rolled / window;
  int region = 0;
  if (shift > 0) region = rolled < size - window ? 0 : (rolled < size - shift ? 1 : 2);
  return static_cast<int>(window_index * 3 + region);
}

}  // namespace

TEST(swin_matches_roll_and_region_mask) {
  const index_t sizes[][2] = {{8, 8}, {8, 12}, {12, 6}, {14, 21}, {9, 9}};
  for (auto [h, w] : sizes) {
    for (index_t window : {1, 2, 3, 4, 7}) {
      if (h % window || w % window) continue;
      for (index_t shift = 0; shift < window; ++shift) {
        const Csr csr = patterns::swin(h, w, window, shift);
        CHECK(equals_definition(csr, h * w, h * w, [&](index_t q, index_t k) {
          return swin_label(q / w, h, window, shift) == swin_label(k / w, h, window, shift) &&
                 swin_label(q % w, w, window, shift) == swin_label(k % w, w, window, shift);
        }));
      }
    }
  }
}

TEST(swin_per_axis_window_and_shift) {
  const Csr csr = patterns::swin(6, 10, 3, 5, 1, 2);
  CHECK(equals_definition(csr, 60, 60, [&](index_t q, index_t k) {
    return swin_label(q / 10, 6, 3, 1) == swin_label(k / 10, 6, 3, 1) &&
           swin_label(q % 10, 10, 5, 2) == swin_label(k % 10, 10, 5, 2);
  }));
}

TEST(swin_rejects_bad_arguments) {
  CHECK_THROWS(patterns::swin(8, 8, 0, 0), "window_size");
  CHECK_THROWS(patterns::swin(8, 8, 9, 0), "window_size");
  CHECK_THROWS(patterns::swin(8, 8, 4, 4), "shift_size");
  CHECK_THROWS(patterns::swin(8, 8, 4, -1), "shift_size");
  CHECK_THROWS(patterns::swin(0, 8, 4, 0), "H must be");
}

TEST(swin_65536_tokens_is_fast) {
  const auto start = std::chrono::steady_clock::now();
  const Csr csr = patterns::swin(256, 256, 8, 4);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("  swin(256, 256, 8, 4): %lld entries in %.3f s\n", static_cast<long long>(csr.nnz()), seconds);
  CHECK(csr.nnz() == 4064256);
}

TEST(local_and_causal_1d) {
  for (index_t n : {0, 1, 5, 17}) {
    for (index_t window : {1, 2, 3, 7, 40}) {
      CHECK(equals_definition(patterns::local_1d(n, window), n, n,
                              [&](index_t i, index_t j) { return std::abs(i - j) <= window / 2; }));
    }
    CHECK(equals_definition(patterns::causal_1d(n), n, n, [](index_t i, index_t j) { return j <= i; }));
  }
  CHECK_THROWS(patterns::local_1d(5, 0), "window_size");
}

TEST(local_2d_p_norms) {
  const index_t h = 7, w = 9;
  for (double p : {0.0, 0.5, 1.0, 2.0, 3.0, double(INFINITY)}) {
    for (double distance : {0.5, 1.0, 1.5, 2.5, 3.7}) {
      CHECK(equals_definition(patterns::local_2d(h, w, distance, p), h * w, h * w, [&](index_t q, index_t k) {
        const double di = std::abs(double(q / w - k / w)), dj = std::abs(double(q % w - k % w));
        double d;
        if (p == 0.0) d = (di != 0) + (dj != 0);
        else if (std::isinf(p)) d = std::max(di, dj);
        else d = std::pow(std::pow(di, p) + std::pow(dj, p), 1.0 / p);
        return d < distance;
      }));
    }
  }
}

TEST(axial_and_dilated_2d) {
  const index_t h = 5, w = 7;
  CHECK(equals_definition(patterns::axial_2d(h, w), h * w, h * w,
                          [&](index_t q, index_t k) { return q / w == k / w || q % w == k % w; }));
  for (index_t k : {1, 2, 3, 8}) {
    CHECK(equals_definition(patterns::dilated_2d(h, w, k), h * w, h * w, [&](index_t a, index_t b) {
      return std::abs(a / w - b / w) % k == 0 && std::abs(a % w - b % w) % k == 0;
    }));
  }
}

TEST(global_tokens_pattern) {
  const std::vector<std::uint8_t> flags = {1, 0, 0, 1, 0, 0};
  CHECK(equals_definition(patterns::global_tokens(flags.data(), 6), 6, 6,
                          [&](index_t i, index_t j) { return flags[i] || flags[j]; }));
}

TEST(random_is_deterministic_and_has_the_density) {
  const Csr a = patterns::random(300, 200, 0.1, 42), b = patterns::random(300, 200, 0.1, 42);
  const Csr c = patterns::random(300, 200, 0.1, 43);
  spattn::validate(a.view(), a.rows() + 1, a.nnz());
  CHECK(a.col_indices() == b.col_indices() && a.row_offsets() == b.row_offsets());
  CHECK(a.col_indices() != c.col_indices());
  CHECK(std::abs(a.nnz() / 60000.0 - 0.1) < 0.01);
  CHECK(patterns::random(10, 10, 0.0).nnz() == 0);
  CHECK(patterns::random(10, 10, 1.0).nnz() == 100);
  CHECK_THROWS(patterns::random(10, 10, 1.5), "density");
}

TEST(from_block_layout_expands_blocks) {
  const std::vector<std::uint8_t> layout = {1, 0, 1, 0, 1, 1};  // 2 x 3 blocks
  CHECK(equals_definition(patterns::from_block_layout(layout.data(), 2, 3, 4), 8, 12,
                          [&](index_t r, index_t c) { return layout[(r / 4) * 3 + c / 4] != 0; }));
  CHECK_THROWS(patterns::from_block_layout(layout.data(), 2, 3, 0), "block_size");
}

TEST(from_groups_matches_label_equality) {
  const std::vector<index_t> rows = {2, 0, -1, 2, 5};
  const std::vector<index_t> cols = {0, 2, 2, 7, -1, 0, 5};
  CHECK(equals_definition(patterns::from_groups(rows.data(), 5, cols.data(), 7), 5, 7,
                          [&](index_t r, index_t c) { return rows[r] >= 0 && rows[r] == cols[c]; }));
  // Swin windows are groups: the label of a token is its (row group, column group).
  const index_t h = 8, w = 12;
  std::vector<index_t> labels(h * w);
  for (index_t i = 0; i < h; ++i)
    for (index_t j = 0; j < w; ++j) labels[i * w + j] = swin_label(i, h, 4, 2) * 100 + swin_label(j, w, 4, 2);
  const Csr groups = patterns::from_groups(labels.data(), h * w, labels.data(), h * w);
  const Csr swin = patterns::swin(h, w, 4, 2);
  CHECK(groups.row_offsets() == swin.row_offsets() && groups.col_indices() == swin.col_indices());
}

TEST_MAIN()

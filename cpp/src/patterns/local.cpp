// Local patterns: 1-D windows, causal, 2-D p-norm balls, axial and dilated grids.

#include <algorithm>
#include <cmath>
#include <limits>

#include "pattern_builder.hpp"
#include "spattn/error.hpp"
#include "spattn/patterns.hpp"

namespace spattn::patterns {

Csr local_1d(index_t n, index_t window_size) {
  SPATTN_CHECK(n >= 0, "n must be >= 0, got ", n);
  SPATTN_CHECK(window_size >= 1, "window_size must be >= 1, got ", window_size);
  const index_t wing = window_size / 2;
  auto range = [=](index_t row) {
    return std::pair<index_t, index_t>{std::max<index_t>(0, row - wing), std::min<index_t>(n, row + wing + 1)};
  };
  return detail::build_by_rows(
      n, n, "local_1d pattern",
      [&](index_t row) {
        auto [begin, end] = range(row);
        return end - begin;
      },
      [&](index_t row, index_t* out) {
        auto [begin, end] = range(row);
        for (index_t col = begin; col < end; ++col) *out++ = col;
      });
}

Csr causal_1d(index_t n) {
  SPATTN_CHECK(n >= 0, "n must be >= 0, got ", n);
  return detail::build_by_rows(
      n, n, "causal_1d pattern", [](index_t row) { return row + 1; },
      [](index_t row, index_t* out) {
        for (index_t col = 0; col <= row; ++col) *out++ = col;
      });
}

namespace {

// Whether a coordinate offset (di, dj) lies at p-norm distance < distance.
struct PNormBall {
  double distance, p;

  bool contains(index_t di, index_t dj) const {
    const double a = std::abs(static_cast<double>(di)), b = std::abs(static_cast<double>(dj));
    if (p == 0.0) return static_cast<double>((a != 0) + (b != 0)) < distance;
    const double high = std::max(a, b), low = std::min(a, b);
    if (std::isinf(p) || low == 0) return high < distance;
    // high * (1 + (low/high)^p)^(1/p): exact on the axes (no root of a power that rounds, e.g.
    // (4^3)^(1/3) = 3.9999999999999996) and free of overflow for large p.
    return high * std::pow(1.0 + std::pow(low / high, p), 1.0 / p) < distance;
  }
  // No offset larger than this along one axis can be inside the ball.
  index_t reach(index_t size) const {
    if (p == 0.0) return size;
    const double bound = std::ceil(distance);
    return bound >= static_cast<double>(size) ? size : static_cast<index_t>(bound);
  }
};

}  // namespace

Csr local_2d(index_t height, index_t width, double distance, double p) {
  SPATTN_CHECK(height >= 0, "H must be >= 0, got ", height);
  SPATTN_CHECK(width >= 0, "W must be >= 0, got ", width);
  SPATTN_CHECK(std::isfinite(distance) && distance >= 0, "distance must be a finite number >= 0, got ", distance);
  SPATTN_CHECK(!std::isnan(p) && p >= 0, "p must be >= 0 (or infinity), got ", p);
  const index_t tokens = checked_mul(height, width, "local_2d pattern");
  const PNormBall ball{distance, p};
  const index_t reach_i = ball.reach(height), reach_j = ball.reach(width);
  auto visit = [&](index_t token, auto&& emit) {
    const index_t i = token / width, j = token % width;
    const index_t i_begin = std::max<index_t>(0, i - reach_i), i_end = std::min(height, i + reach_i + 1);
    const index_t j_begin = std::max<index_t>(0, j - reach_j), j_end = std::min(width, j + reach_j + 1);
    for (index_t ii = i_begin; ii < i_end; ++ii) {
      for (index_t jj = j_begin; jj < j_end; ++jj) {
        if (ball.contains(ii - i, jj - j)) emit(ii * width + jj);
      }
    }
  };
  return detail::build_by_rows(
      tokens, tokens, "local_2d pattern",
      [&](index_t token) {
        index_t count = 0;
        visit(token, [&](index_t) { ++count; });
        return count;
      },
      [&](index_t token, index_t* out) { visit(token, [&](index_t col) { *out++ = col; }); });
}

Csr axial_2d(index_t height, index_t width) {
  SPATTN_CHECK(height >= 0, "H must be >= 0, got ", height);
  SPATTN_CHECK(width >= 0, "W must be >= 0, got ", width);
  const index_t tokens = checked_mul(height, width, "axial_2d pattern");
  return detail::build_by_rows(
      tokens, tokens, "axial_2d pattern", [&](index_t) { return height + width - 1; },
      [&](index_t token, index_t* out) {
        const index_t i = token / width, j = token % width;
        for (index_t ii = 0; ii < i; ++ii) *out++ = ii * width + j;       // same column, above
        for (index_t jj = 0; jj < width; ++jj) *out++ = i * width + jj;  // the whole row
        for (index_t ii = i + 1; ii < height; ++ii) *out++ = ii * width + j;  // same column, below
      });
}

Csr dilated_2d(index_t height, index_t width, index_t k) {
  SPATTN_CHECK(height >= 0, "H must be >= 0, got ", height);
  SPATTN_CHECK(width >= 0, "W must be >= 0, got ", width);
  SPATTN_CHECK(k >= 1, "k must be >= 1, got ", k);
  const index_t tokens = checked_mul(height, width, "dilated_2d pattern");
  // Along an axis of length n, coordinate x sees the positions congruent to x mod k.
  auto members = [&](index_t x, index_t n) { return (n - x % k + k - 1) / k; };
  return detail::build_by_rows(
      tokens, tokens, "dilated_2d pattern",
      [&](index_t token) { return members(token / width, height) * members(token % width, width); },
      [&](index_t token, index_t* out) {
        const index_t i = token / width, j = token % width;
        for (index_t ii = i % k; ii < height; ii += k) {
          for (index_t jj = j % k; jj < width; jj += k) *out++ = ii * width + jj;
        }
      });
}

}  // namespace spattn::patterns

// CSR construction, validation and algebra against brute-force dense computations.

#include <random>
#include <set>

#include "check.hpp"
#include "spattn/spattn.hpp"

using spattn::Csr;
using spattn::index_t;

namespace {

std::vector<std::uint8_t> random_mask(index_t rows, index_t cols, double density, unsigned seed) {
  std::mt19937 engine(seed);
  std::bernoulli_distribution bit(density);
  std::vector<std::uint8_t> mask(rows * cols);
  for (auto& m : mask) m = bit(engine);
  return mask;
}

std::vector<std::uint8_t> to_dense(const Csr& csr) {
  std::vector<std::uint8_t> mask(csr.rows() * csr.cols(), 0);
  for (index_t row = 0; row < csr.rows(); ++row) {
    for (index_t k = csr.row_offsets()[row]; k < csr.row_offsets()[row + 1]; ++k) {
      mask[row * csr.cols() + csr.col_indices()[k]] = 1;
    }
  }
  return mask;
}

void check_valid(const Csr& csr) {
  spattn::validate(csr.view(), static_cast<index_t>(csr.row_offsets().size()), csr.nnz());
}

}  // namespace

TEST(from_dense_round_trips) {
  for (unsigned seed = 0; seed < 5; ++seed) {
    const index_t rows = 7 + seed, cols = 11 - seed;
    const auto mask = random_mask(rows, cols, 0.3, seed);
    const Csr csr = Csr::from_dense(mask.data(), rows, cols);
    check_valid(csr);
    CHECK(to_dense(csr) == mask);
  }
}

TEST(from_coo_sorts_and_merges_duplicates) {
  const std::vector<index_t> rows = {2, 0, 2, 0, 2, 1, 0};
  const std::vector<index_t> cols = {1, 3, 0, 3, 1, 2, 0};
  const Csr csr = Csr::from_coo(3, 4, rows.data(), cols.data(), 7);
  check_valid(csr);
  CHECK((csr.row_offsets() == std::vector<index_t>{0, 2, 3, 5}));
  CHECK((csr.col_indices() == std::vector<index_t>{0, 3, 2, 0, 1}));
}

TEST(from_coo_rejects_out_of_range) {
  const std::vector<index_t> rows = {0, 5};
  const std::vector<index_t> cols = {0, 0};
  CHECK_THROWS(Csr::from_coo(3, 4, rows.data(), cols.data(), 2), "rows: entry 1");
  const std::vector<index_t> negative = {0, -1};
  CHECK_THROWS(Csr::from_coo(3, 4, cols.data(), negative.data(), 2), "cols: entry 1");
}

TEST(validation_names_each_problem) {
  CHECK_THROWS(Csr(2, 3, {0, 1}, {0}), "rows + 1");
  CHECK_THROWS(Csr(2, 3, {1, 1, 1}, {0}), "row_offsets[0] must be 0");
  CHECK_THROWS(Csr(2, 3, {0, 2, 1}, {0, 1}), "non-decreasing");
  CHECK_THROWS(Csr(2, 3, {0, 1, 3}, {0, 1}), "last row offset");
  CHECK_THROWS(Csr(2, 3, {0, 1, 2}, {0, 3}), "out of range");
  CHECK_THROWS(Csr(2, 3, {0, 1, 2}, {0, -1}), "out of range");
  CHECK_THROWS(Csr(1, 3, {0, 2}, {2, 1}), "sorted and unique");
  CHECK_THROWS(Csr(1, 3, {0, 2}, {1, 1}), "sorted and unique");
  CHECK_THROWS(Csr(-1, 3, {0}, {}), "rows must be >= 0");
  const Csr ok(2, 3, {0, 2, 2}, {0, 2});
  CHECK(ok.nnz() == 2);
}

TEST(transpose_matches_dense_and_permutation_maps_entries) {
  for (unsigned seed = 0; seed < 5; ++seed) {
    const index_t rows = 9, cols = 5 + seed;
    const auto mask = random_mask(rows, cols, 0.4, 100 + seed);
    const Csr csr = Csr::from_dense(mask.data(), rows, cols);
    const auto transposed = spattn::transpose(csr.view());
    check_valid(transposed.pattern);
    const auto dense_t = to_dense(transposed.pattern);
    bool equal = true;
    for (index_t r = 0; r < rows; ++r)
      for (index_t c = 0; c < cols; ++c) equal &= dense_t[c * rows + r] == mask[r * cols + c];
    CHECK(equal);
    // permutation[t] is the CSR position of transposed entry t: same (row, col) pair swapped.
    bool mapped = true;
    for (index_t tr = 0; tr < transposed.pattern.rows(); ++tr) {
      for (index_t t = transposed.pattern.row_offsets()[tr]; t < transposed.pattern.row_offsets()[tr + 1]; ++t) {
        const index_t k = transposed.permutation[t];
        mapped &= csr.col_indices()[k] == tr;
        mapped &= csr.row_offsets()[transposed.pattern.col_indices()[t]] <= k &&
                  k < csr.row_offsets()[transposed.pattern.col_indices()[t] + 1];
      }
    }
    CHECK(mapped);
  }
}

TEST(union_and_intersection_match_dense) {
  const index_t rows = 13, cols = 8;
  const auto a = random_mask(rows, cols, 0.3, 7), b = random_mask(rows, cols, 0.5, 8);
  const Csr ca = Csr::from_dense(a.data(), rows, cols), cb = Csr::from_dense(b.data(), rows, cols);
  const Csr u = spattn::union_of(ca.view(), cb.view()), i = spattn::intersection_of(ca.view(), cb.view());
  check_valid(u);
  check_valid(i);
  const auto du = to_dense(u), di = to_dense(i);
  bool ok = true;
  for (index_t k = 0; k < rows * cols; ++k) ok &= du[k] == (a[k] | b[k]) && di[k] == (a[k] & b[k]);
  CHECK(ok);
  const Csr other(1, 1, {0, 1}, {0});
  CHECK_THROWS(spattn::union_of(ca.view(), other.view()), "same shape");
}

TEST(rows_by_length_is_decreasing_and_stable) {
  const Csr csr(4, 4, {0, 1, 4, 5, 8}, {0, 0, 1, 2, 3, 0, 1, 2});
  const auto order = spattn::rows_by_length(csr.view());
  CHECK((order == std::vector<index_t>{1, 3, 0, 2}));
}

TEST(checked_math_refuses_overflow) {
  CHECK_THROWS(spattn::checked_mul(index_t{1} << 40, index_t{1} << 40, "size"), "overflows");
  CHECK(spattn::checked_mul(3, 4, "size") == 12);
}

TEST_MAIN()

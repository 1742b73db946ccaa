#pragma once
// Size arithmetic that refuses to overflow: sizes come from users, and a wrapped product would turn
// into a small allocation followed by out-of-bounds writes.

#include <limits>

#include "spattn/csr.hpp"
#include "spattn/error.hpp"

namespace spattn {

inline index_t checked_mul(index_t a, index_t b, const char* what) {
  index_t result = 0;
  SPATTN_CHECK(a >= 0 && b >= 0 && !__builtin_mul_overflow(a, b, &result), what, " is too large: ", a,
               " x ", b, " overflows a 64-bit index");
  return result;
}

inline index_t checked_add(index_t a, index_t b, const char* what) {
  index_t result = 0;
  SPATTN_CHECK(!__builtin_add_overflow(a, b, &result), what, " is too large: ", a, " + ", b,
               " overflows a 64-bit index");
  return result;
}

// The largest number of pattern entries we agree to build: 2^40 entries would be 8 TiB of indices,
// far past any machine, so anything larger is certainly a mistake and is refused up front.
inline constexpr index_t max_nnz = index_t{1} << 40;

inline void check_nnz_limit(index_t nnz, const char* what) {
  SPATTN_CHECK(nnz >= 0 && nnz <= max_nnz, what, " would have ", nnz, " entries, more than the limit of ",
               max_nnz);
}

// Rows or columns beyond max_nnz cannot be a real pattern either (their offsets alone would be 8 TiB).
inline void check_size_limit(index_t size, const char* what, const char* dimension) {
  SPATTN_CHECK(size >= 0 && size <= max_nnz, what, " would have ", size, " ", dimension,
               ", more than the limit of ", max_nnz);
}

}  // namespace spattn

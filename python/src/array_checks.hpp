#pragma once
// Argument checks shared by the kernel bindings: arrays arrive unconstrained (nb::ndarray<>) so that a
// mismatch becomes our own error naming the argument instead of nanobind's generic "incompatible function
// arguments", and nanobind never converts (copies) anything — for an output that would drop the result.

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cstdint>
#include <optional>
#include <string>

#include "spattn/csr.hpp"
#include "spattn/error.hpp"

namespace spattn::python {

namespace nb = nanobind;

using Array = nb::ndarray<>;
using OptionalArray = std::optional<Array>;

inline const nb::dlpack::dtype float16_dtype{static_cast<std::uint8_t>(nb::dlpack::dtype_code::Float), 16, 1};
inline const nb::dlpack::dtype bfloat16_dtype{static_cast<std::uint8_t>(nb::dlpack::dtype_code::Bfloat), 16, 1};

inline std::string shape_of(const Array& array) {
  std::string text = "[";
  for (std::size_t axis = 0; axis < array.ndim(); ++axis) {
    text += (axis ? ", " : "") + std::to_string(array.shape(axis));
  }
  return text + "]";
}

inline index_t size(const Array& array, std::size_t axis) { return static_cast<index_t>(array.shape(axis)); }

// Of the given rank and C-contiguous (strides of size-1 axes do not matter; empty arrays are never read,
// and torch gives them arbitrary strides). Devices are checked by each backend's binding.
inline void check_rank_and_contiguity(const Array& array, const char* name, std::size_t ndim) {
  SPATTN_CHECK(array.ndim() == ndim, name, " must be ", ndim, "-D, got shape ", shape_of(array));
  if (array.size() == 0) return;
  std::int64_t expected_stride = 1;
  for (std::size_t axis = ndim; axis-- > 0;) {
    SPATTN_CHECK(array.shape(axis) == 1 || array.stride(axis) == expected_stride, name,
                 " must be contiguous (the Python layer makes tensors contiguous)");
    expected_stride *= static_cast<std::int64_t>(array.shape(axis));
  }
}

inline void check_size(const Array& array, const char* name, std::size_t axis, index_t expected,
                       const char* meaning) {
  SPATTN_CHECK(size(array, axis) == expected, name, ": dimension ", axis, " must be ", meaning, " = ", expected,
               ", got shape ", shape_of(array));
}

inline void check_same_dtype(const Array& array, const char* name, const Array& reference,
                             const char* reference_name) {
  SPATTN_CHECK(array.dtype() == reference.dtype(), name, " must have the same dtype as ", reference_name);
}

}  // namespace spattn::python

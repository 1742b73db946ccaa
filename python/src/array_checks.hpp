#pragma once
// Argument checks shared by the kernel bindings, CPU and CUDA: arrays arrive unconstrained (nb::ndarray<>) so
// that a mismatch becomes our own error naming the argument instead of nanobind's generic "incompatible
// function arguments", and nanobind never converts (copies) anything — for an output that would drop the
// result. What differs between the backends is where an array must live, so every check that looks at a
// device takes a place: `on_cpu`, or a CudaDevice. What else each backend checks is in cpu_arguments.hpp
// (the pattern's contents) and cuda_arguments.hpp.

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cstdint>
#include <optional>
#include <string>

#include "spattn/csr.hpp"
#include "spattn/error.hpp"
#include "spattn/kernels.hpp"

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

inline void check_size(const Array& array, const char* name, std::size_t axis, index_t expected, const char* meaning) {
  SPATTN_CHECK(size(array, axis) == expected, name, ": dimension ", axis, " must be ", meaning, " = ", expected,
               ", got shape ", shape_of(array));
}

inline void check_same_dtype(const Array& array, const char* name, const Array& reference, const char* reference_name) {
  SPATTN_CHECK(array.dtype() == reference.dtype(), name, " must have the same dtype as ", reference_name);
}

// ---- where the arrays of a call live -------------------------------------------------------------------
struct CpuPlace {
  void check(const Array& array, const char* name) const {
    SPATTN_CHECK(array.device_type() == nb::device::cpu::value, name, " must be on the CPU");
  }
};
inline constexpr CpuPlace on_cpu{};

// All arrays of one CUDA call sit on the device of the first array checked.
struct CudaDevice {
  int id = -1;
  void check(const Array& array, const char* name) {
    SPATTN_CHECK(array.device_type() == nb::device::cuda::value, name, " must be on a CUDA device");
    if (id < 0) id = array.device_id();
    SPATTN_CHECK(array.device_id() == id, name, " is on cuda:", array.device_id(),
                 " but the other arguments are on cuda:", id);
  }
};

// In `place`, of the given rank, C-contiguous (strides of size-1 axes do not matter).
template <class Place>
void check_layout(const Array& array, const char* name, std::size_t ndim, Place& place) {
  place.check(array, name);
  check_rank_and_contiguity(array, name, ndim);
}

template <class Place>
const index_t* indices(const Array& array, const char* name, Place& place) {
  check_layout(array, name, 1, place);
  SPATTN_CHECK(array.dtype() == nb::dtype<std::int64_t>(), name, " must be int64");
  return static_cast<const index_t*>(array.data());
}

inline index_t nnz_of(const Array& col_indices) { return size(col_indices, 0); }

// The pattern's arrays: int64 vectors in `place`, rows + 1 offsets (rows from the dense operand). Their
// contents are the backend's business (cpu_arguments.hpp validates them; on CUDA they are not read).
template <class Place>
CsrView csr_arrays(index_t rows, index_t cols, const Array& row_offsets, const Array& col_indices, Place& place,
                   const char* prefix = "") {
  const std::string offsets_name = std::string(prefix) + "row_offsets";
  const std::string columns_name = std::string(prefix) + "col_indices";
  const CsrView view{rows, cols, indices(row_offsets, offsets_name.c_str(), place),
                     indices(col_indices, columns_name.c_str(), place)};
  SPATTN_CHECK(size(row_offsets, 0) == rows + 1, offsets_name, " must have ", rows + 1,
               " entries (rows + 1, rows taken from the dense operand), got ", size(row_offsets, 0));
  return view;
}

// The transposed pattern's arrays and the permutation back to CSR order: nnz entries each.
template <class Place>
TransposedView transposed_arrays(CsrView pattern, index_t nnz, const Array& t_row_offsets, const Array& t_col_indices,
                                 const Array& permutation, Place& place) {
  const CsrView t = csr_arrays(pattern.cols, pattern.rows, t_row_offsets, t_col_indices, place, "t_");
  const index_t* order = indices(permutation, "permutation", place);
  SPATTN_CHECK(nnz_of(t_col_indices) == nnz && size(permutation, 0) == nnz,
               "t_col_indices and permutation must have nnz = ", nnz, " entries, got ", nnz_of(t_col_indices), " and ",
               size(permutation, 0));
  return {t, order};
}

template <typename T>
T* data(const Array& array) {
  return static_cast<T*>(array.data());
}

// A [batch, n, dim] operand: layout, batch, dtype equal to the first operand's.
template <class Place>
void check_dense(const Array& array, const char* name, const Array& first, const char* first_name, index_t batch,
                 Place& place) {
  check_layout(array, name, 3, place);
  check_same_dtype(array, name, first, first_name);
  check_size(array, name, 0, batch, "the batch size");
}

// A [batch, nnz] array of pattern values.
template <class Place>
void check_values(const Array& array, const char* name, const Array& first, const char* first_name, index_t batch,
                  index_t nnz, Place& place) {
  check_layout(array, name, 2, place);
  check_same_dtype(array, name, first, first_name);
  check_size(array, name, 0, batch, "the batch size");
  check_size(array, name, 1, nnz, "the pattern's nnz");
}

// Same shape and dtype as `like`, contiguous, in `place`.
template <class Place>
void check_like(const Array& array, const char* name, const Array& like, const char* like_name, Place& place) {
  check_layout(array, name, like.ndim(), place);
  check_same_dtype(array, name, like, like_name);
  for (std::size_t axis = 0; axis < like.ndim(); ++axis) check_size(array, name, axis, size(like, axis), like_name);
}

}  // namespace spattn::python

#pragma once
// Moving data between the core and Python without copies.

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cstdint>
#include <initializer_list>
#include <utility>
#include <vector>

#include "spattn/csr.hpp"

namespace spattn::python {

namespace nb = nanobind;

// One-dimensional, contiguous, on the CPU: the only layout the core reads. The Python layer makes
// tensors contiguous before calling in.
template <typename T>
using CpuVector = nb::ndarray<T, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
template <typename T>
using CpuMatrix = nb::ndarray<T, nb::ndim<2>, nb::c_contig, nb::device::cpu>;

// Hands a vector to NumPy without copying: the array owns the vector through a capsule.
template <typename T>
nb::ndarray<nb::numpy, T, nb::ndim<1>> to_numpy(std::vector<T>&& values) {
  auto* owned = new std::vector<T>(std::move(values));
  nb::capsule owner(owned, [](void* pointer) noexcept { delete static_cast<std::vector<T>*>(pointer); });
  return nb::ndarray<nb::numpy, T, nb::ndim<1>>(owned->data(), {owned->size()}, owner);
}

// The same with a C-order shape whose product is values.size().
template <typename T>
nb::ndarray<nb::numpy, T> to_numpy(std::vector<T>&& values, std::initializer_list<std::size_t> shape) {
  auto* owned = new std::vector<T>(std::move(values));
  nb::capsule owner(owned, [](void* pointer) noexcept { delete static_cast<std::vector<T>*>(pointer); });
  return nb::ndarray<nb::numpy, T>(owned->data(), shape, owner);
}

// (rows, cols, row_offsets, col_indices): the form in which every pattern crosses into Python.
inline nb::tuple csr_to_python(Csr&& csr) {
  const index_t rows = csr.rows(), cols = csr.cols();
  auto offsets = to_numpy(csr.release_row_offsets());
  auto columns = to_numpy(csr.release_col_indices());
  return nb::make_tuple(rows, cols, offsets, columns);
}

inline CsrView csr_view(index_t rows, index_t cols, const CpuVector<const index_t>& row_offsets,
                        const CpuVector<const index_t>& col_indices) {
  return {rows, cols, row_offsets.data(), col_indices.data()};
}

}  // namespace spattn::python

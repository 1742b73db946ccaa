// Bindings of the block layouts of the sparse transformers. Each layout returns as a 2-D NumPy uint8
// array that owns the core's buffer. Argument types are checked in Python, values here.

#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "arrays.hpp"
#include "spattn/spattn.hpp"

namespace spattn::python {
namespace {

using Indices = std::vector<index_t>;
using OptionalIndices = std::optional<std::vector<index_t>>;

// Hands the layout's bytes to NumPy as a block_rows x block_cols array without copying.
nb::ndarray<nb::numpy, std::uint8_t, nb::ndim<2>> layout_to_numpy(layouts::BlockLayout&& layout) {
  auto* owned = new std::vector<std::uint8_t>(std::move(layout.blocks));
  nb::capsule owner(owned, [](void* pointer) noexcept { delete static_cast<std::vector<std::uint8_t>*>(pointer); });
  const std::size_t shape[2] = {static_cast<std::size_t>(layout.block_rows),
                                static_cast<std::size_t>(layout.block_cols)};
  return nb::ndarray<nb::numpy, std::uint8_t, nb::ndim<2>>(owned->data(), 2, shape, owner);
}

}  // namespace

void bind_layouts(nb::module_& m) {
  using layouts::parse_attention;

  m.def("layouts_fixed", [](index_t num_blocks, index_t num_local_blocks, index_t num_global_blocks,
                            const std::string& attention, bool horizontal_global_attention,
                            index_t num_different_global_patterns, index_t head) {
    return layout_to_numpy(layouts::fixed(num_blocks, num_local_blocks, num_global_blocks, parse_attention(attention),
                                          horizontal_global_attention, num_different_global_patterns, head));
  });
  m.def("layouts_variable", [](index_t num_blocks, index_t num_random_blocks, const Indices& local_window_blocks,
                               const Indices& global_block_indices, const OptionalIndices& global_block_end_indices,
                               const std::string& attention, bool horizontal_global_attention, std::uint64_t seed) {
    return layout_to_numpy(layouts::variable(num_blocks, num_random_blocks, local_window_blocks, global_block_indices,
                                             global_block_end_indices, parse_attention(attention),
                                             horizontal_global_attention, seed));
  }, nb::arg("num_blocks"), nb::arg("num_random_blocks"), nb::arg("local_window_blocks"),
     nb::arg("global_block_indices"), nb::arg("global_block_end_indices").none(), nb::arg("attention"),
     nb::arg("horizontal_global_attention"), nb::arg("seed"));
  m.def("layouts_bigbird", [](index_t num_blocks, index_t num_random_blocks, index_t num_sliding_window_blocks,
                              index_t num_global_blocks, const std::string& attention, std::uint64_t seed) {
    return layout_to_numpy(layouts::bigbird(num_blocks, num_random_blocks, num_sliding_window_blocks,
                                            num_global_blocks, parse_attention(attention), seed));
  });
  m.def("layouts_longformer", [](index_t num_blocks, index_t num_sliding_window_blocks,
                                 const Indices& global_block_indices, const OptionalIndices& global_block_end_indices,
                                 const std::string& attention) {
    return layout_to_numpy(layouts::longformer(num_blocks, num_sliding_window_blocks, global_block_indices,
                                               global_block_end_indices, parse_attention(attention)));
  }, nb::arg("num_blocks"), nb::arg("num_sliding_window_blocks"), nb::arg("global_block_indices"),
     nb::arg("global_block_end_indices").none(), nb::arg("attention"));
}

}  // namespace spattn::python

// Bindings of the neighborhood-attention and 3-D Swin generators. Per-axis arguments arrive as equal-length
// lists (checked for type and length in Python, for value in the core).

#include <nanobind/stl/vector.h>

#include <vector>

#include "arrays.hpp"
#include "spattn/spattn.hpp"

namespace spattn::python {
namespace {

std::vector<patterns::NeighborhoodAxis> neighborhood_axes(const std::vector<index_t>& shape,
                                                          const std::vector<index_t>& kernel_size,
                                                          const std::vector<index_t>& dilation,
                                                          const std::vector<bool>& causal,
                                                          const std::vector<index_t>& stride) {
  SPATTN_CHECK(kernel_size.size() == shape.size() && dilation.size() == shape.size() &&
                   causal.size() == shape.size() && stride.size() == shape.size(),
               "kernel_size, dilation, causal and stride must have one value per axis of shape (", shape.size(),
               "), got ", kernel_size.size(), ", ", dilation.size(), ", ", causal.size(), " and ", stride.size());
  std::vector<patterns::NeighborhoodAxis> axes(shape.size());
  for (std::size_t i = 0; i < shape.size(); ++i) {
    axes[i] = {shape[i], kernel_size[i], dilation[i], causal[i], stride[i]};
  }
  return axes;
}

}  // namespace

void bind_neighborhood(nb::module_& m) {
  using Axes = std::vector<index_t>;
  // Returns (pattern, bias_index) when with_bias_index, else the pattern alone: a module that needs both
  // computes the geometry once per grid size.
  m.def("patterns_neighborhood", [](Axes shape, Axes kernel_size, Axes dilation, std::vector<bool> causal,
                                    Axes stride, bool with_bias_index) -> nb::object {
    const auto axes = neighborhood_axes(shape, kernel_size, dilation, causal, stride);
    nb::tuple pattern = csr_to_python(patterns::neighborhood(axes));
    if (!with_bias_index) return std::move(pattern);
    return nb::make_tuple(pattern, to_numpy(patterns::neighborhood_bias_index(axes)));
  });
  m.def("patterns_neighborhood_bias_index",
        [](Axes shape, Axes kernel_size, Axes dilation, std::vector<bool> causal, Axes stride) {
          return to_numpy(
              patterns::neighborhood_bias_index(neighborhood_axes(shape, kernel_size, dilation, causal, stride)));
        });
  m.def("patterns_swin_3d", [](index_t frames, index_t height, index_t width, index_t window_frames,
                               index_t window_height, index_t window_width, index_t shift_frames,
                               index_t shift_height, index_t shift_width) {
    return csr_to_python(patterns::swin_3d(frames, height, width, window_frames, window_height, window_width,
                                           shift_frames, shift_height, shift_width));
  });
}

}  // namespace spattn::python

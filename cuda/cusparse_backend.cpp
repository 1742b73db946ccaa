// The cuSPARSE backend (SDDMM / SpMM through the vendor library, a baseline for the custom kernels).

#include <cusparse.h>

#include "spattn/cuda.hpp"

namespace spattn::cuda {

int cusparse_version() {
  int major = 0, minor = 0, patch = 0;
  cusparseGetProperty(MAJOR_VERSION, &major);
  cusparseGetProperty(MINOR_VERSION, &minor);
  cusparseGetProperty(PATCH_LEVEL, &patch);
  return major * 1000 + minor * 100 + patch;
}

}  // namespace spattn::cuda

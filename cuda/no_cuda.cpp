// Stand-in for the CUDA backend in builds without CUDA (SPATTN_CUDA=OFF or no compiler found).

#include "spattn/cuda.hpp"

namespace spattn::cuda {

bool is_available() { return false; }
int device_count() { return 0; }
std::string device_name(int) { return "spattn was built without CUDA support"; }
int cusparse_version() { return 0; }

}  // namespace spattn::cuda

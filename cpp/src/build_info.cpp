#include "spattn/build_info.hpp"

namespace spattn {

BuildInfo build_info() {
  BuildInfo info;
  info.version = SPATTN_VERSION;
#ifdef SPATTN_WITH_CUDA
  info.cuda = true;
  info.cuda_archs = SPATTN_CUDA_ARCHS;
  info.cuda_version = SPATTN_CUDA_VERSION;
#endif
#ifdef SPATTN_WITH_CUSPARSE
  info.cusparse = true;
#endif
#ifdef _OPENMP
  info.openmp = true;
#endif
#if defined(__clang__)
  info.compiler = "clang " __clang_version__;
#elif defined(__GNUC__)
  info.compiler = "gcc " __VERSION__;
#endif
  return info;
}

}  // namespace spattn

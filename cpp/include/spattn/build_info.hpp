#pragma once
// What this build of spattn contains, for users and bug reports.

#include <string>

namespace spattn {

struct BuildInfo {
  std::string version;
  bool cuda = false;          // CUDA kernels compiled in
  std::string cuda_archs;     // e.g. "80;90"
  std::string cuda_version;   // CUDA toolkit the kernels were compiled with
  bool cusparse = false;      // the cuSPARSE backend compiled in
  bool openmp = false;        // CPU kernels multi-threaded
  std::string compiler;
};

BuildInfo build_info();

}  // namespace spattn

#pragma once
// The CUDA side of spattn as seen from host code. Usable without the CUDA headers: cudaStream_t is
// declared here exactly as the CUDA runtime declares it. In a build without CUDA, is_available() is
// false and every kernel entry point throws spattn::Error.

#include <string>

typedef struct CUstream_st* cudaStream_t;

namespace spattn::cuda {

// Compiled with CUDA support and at least one device visible.
bool is_available();
// Number of visible devices (0 without a driver or without CUDA support).
int device_count();
// "NVIDIA H100 80GB HBM3 (sm_90)" or an explanation of why there is none.
std::string device_name(int device);
// cuSPARSE's version as major * 1000 + minor * 100 + patch, or 0 when built without cuSPARSE or when
// libcusparse cannot be loaded (it is loaded on first use, not linked).
int cusparse_version();
// Why the cuSPARSE entry points cannot run here (built without it, or the library and where it was looked
// for), or "" when they can.
std::string cusparse_load_error();

}  // namespace spattn::cuda

#pragma once
// Turns CUDA runtime errors into spattn::Error, so every launch is checked the same way.

#include <cuda_runtime_api.h>

#include "spattn/error.hpp"

#define SPATTN_CUDA_CHECK(expression)                                                                   \
  do {                                                                                                  \
    const cudaError_t spattn_status_ = (expression);                                                    \
    SPATTN_CHECK(spattn_status_ == cudaSuccess, "CUDA error in ", #expression, ": ",                    \
                 cudaGetErrorString(spattn_status_));                                                   \
  } while (false)

// After a kernel launch: catches bad launch configurations without synchronising the stream.
#define SPATTN_CUDA_CHECK_LAUNCH() SPATTN_CUDA_CHECK(cudaGetLastError())

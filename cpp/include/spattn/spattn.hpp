#pragma once
// spattn: attention over any sparsity pattern stored as CSR. Include this one header.

#include "spattn/block_layouts.hpp"
#include "spattn/build_info.hpp"
#include "spattn/checked_math.hpp"
#include "spattn/csr.hpp"
#include "spattn/cuda.hpp"
#include "spattn/cuda_kernels.hpp"
#include "spattn/error.hpp"
#include "spattn/kernels.hpp"
#include "spattn/neighborhood.hpp"
#include "spattn/patterns.hpp"

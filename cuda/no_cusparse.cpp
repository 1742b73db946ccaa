// The cuSPARSE entry points in a CUDA build that found no cuSPARSE: they exist, and say why they fail.

#include "spattn/cuda.hpp"
#include "spattn/cuda_kernels.hpp"
#include "spattn/error.hpp"

namespace spattn::cuda {
namespace {
const char* const kNoCusparse = "spattn was built without cuSPARSE (cusparse.h was not found at build time)";
[[noreturn]] void no_cusparse() { throw Error(kNoCusparse); }
}  // namespace

int cusparse_version() { return 0; }
std::string cusparse_load_error() { return kNoCusparse; }

std::size_t cusparse_sddmm_workspace_size(CsrView, index_t, const float*, const float*, float*, index_t, index_t) {
  no_cusparse();
}
void cusparse_sddmm(CsrView, index_t, const float*, const float*, float*, index_t, index_t, void*, std::size_t,
                    cudaStream_t) {
  no_cusparse();
}
std::size_t cusparse_spmm_workspace_size(CsrView, index_t, const float*, const float*, float*, index_t, index_t) {
  no_cusparse();
}
void cusparse_spmm(CsrView, index_t, const float*, const float*, float*, index_t, index_t, void*, std::size_t,
                   cudaStream_t) {
  no_cusparse();
}

}  // namespace spattn::cuda

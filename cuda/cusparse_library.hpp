#pragma once
// cuSPARSE, loaded with dlopen on first use. libspattn does not link it, so that one wheel imports and runs
// its CPU paths where no NVIDIA library is installed (beside a CPU-only torch); cusparse.h is compiled
// against for the types and signatures only.

#include <cusparse.h>

namespace spattn::cuda {

// The cuSPARSE functions spattn calls. CusparseLibrary has a member per function, named without the
// `cusparse` prefix: library.SpMM(...) calls cusparseSpMM.
#define SPATTN_CUSPARSE_FUNCTIONS(X) \
  X(GetProperty)                     \
  X(GetErrorString)                  \
  X(Create)                          \
  X(SetStream)                       \
  X(CreateCsr)                       \
  X(CsrSetPointers)                  \
  X(DestroySpMat)                    \
  X(CreateDnMat)                     \
  X(DnMatSetValues)                  \
  X(DestroyDnMat)                    \
  X(SDDMM_bufferSize)                \
  X(SDDMM)                           \
  X(SpMM_bufferSize)                 \
  X(SpMM)

struct CusparseLibrary {
#define SPATTN_CUSPARSE_MEMBER(name) decltype(&::cusparse##name) name = nullptr;
  SPATTN_CUSPARSE_FUNCTIONS(SPATTN_CUSPARSE_MEMBER)
#undef SPATTN_CUSPARSE_MEMBER
};

// The library, loaded on the first call (thread-safe; later calls return the same result), or nullptr when
// it cannot be loaded. Never throws.
const CusparseLibrary* try_load_cusparse();

// The library; throws spattn::Error saying what is missing and where it was looked for when it cannot be
// loaded.
const CusparseLibrary& cusparse_library();

}  // namespace spattn::cuda

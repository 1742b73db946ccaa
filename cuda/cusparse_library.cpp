// Finds and loads libcusparse on first use (see cusparse_library.hpp for why it is not linked).
//
// Where it looks, in order: a copy already loaded in the process (torch's CUDA build loads one), the
// `nvidia` pip wheels in the site-packages that holds spattn (PyTorch's CUDA wheels install cuSPARSE
// there: nvidia/cu13/lib for CUDA 13, nvidia/cusparse/lib for CUDA 12), then the dynamic loader's default
// search path (LD_LIBRARY_PATH, ld.so.cache: a system CUDA toolkit).

#include "cusparse_library.hpp"

#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <string>
#include <vector>

#include "spattn/cuda.hpp"
#include "spattn/error.hpp"

namespace spattn::cuda {
namespace {

// The soname spattn was compiled against: the major version is the ABI.
const std::string kSoname = "libcusparse.so." + std::to_string(CUSPARSE_VER_MAJOR);

std::string parent_directory(const std::string& path) {
  const std::size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? std::string(".") : path.substr(0, slash);
}

// site-packages/spattn/lib/libspattn.so -> site-packages/nvidia/...; outside a wheel install these paths
// simply do not exist.
std::vector<std::string> wheel_candidates() {
  Dl_info self{};
  if (dladdr(reinterpret_cast<const void*>(&try_load_cusparse), &self) == 0 || self.dli_fname == nullptr) return {};
  const std::string site_packages = parent_directory(parent_directory(parent_directory(self.dli_fname)));
  const std::string nvidia = site_packages + "/nvidia/";
  return {nvidia + "cu" + std::to_string(CUDART_VERSION / 1000) + "/lib/" + kSoname,
          nvidia + "cusparse/lib/" + kSoname};
}

struct LoadResult {
  CusparseLibrary library;
  bool loaded = false;
  std::string error;  // why it was not loaded
};

// Resolves every function; on a missing symbol, says which.
bool resolve(void* handle, const std::string& where, LoadResult& result) {
#define SPATTN_CUSPARSE_RESOLVE(name)                                                                    \
  result.library.name = reinterpret_cast<decltype(&::cusparse##name)>(dlsym(handle, "cusparse" #name));  \
  if (result.library.name == nullptr) {                                                                 \
    result.error = where + " has no cusparse" #name " (cuSPARSE " + std::to_string(CUSPARSE_VER_MAJOR) +  \
                   ".x is needed)";                                                                     \
    return false;                                                                                        \
  }
  SPATTN_CUSPARSE_FUNCTIONS(SPATTN_CUSPARSE_RESOLVE)
#undef SPATTN_CUSPARSE_RESOLVE
  return true;
}

LoadResult load() {
  LoadResult result;
  // Never dlclose'd: handles and function pointers live as long as the process.
  void* handle = dlopen(kSoname.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
  std::string where = kSoname + " (already loaded)";
  std::string tried;
  const std::vector<std::string> candidates = wheel_candidates();
  for (auto path = candidates.begin(); handle == nullptr && path != candidates.end(); ++path) {
    handle = dlopen(path->c_str(), RTLD_NOW | RTLD_LOCAL);
    where = *path;
    tried += *path + ", ";
  }
  if (handle == nullptr) {
    handle = dlopen(kSoname.c_str(), RTLD_NOW | RTLD_LOCAL);
    where = kSoname;
  }
  if (handle == nullptr) {
    const char* reason = dlerror();
    result.error = "cuSPARSE (" + kSoname + ") could not be loaded: looked in " + tried +
                   "then the default library path" + (reason != nullptr ? std::string(" (") + reason + ")" : "") +
                   "; install PyTorch's CUDA build or the nvidia-cusparse wheel, or put " + kSoname +
                   " on LD_LIBRARY_PATH";
    return result;
  }
  result.loaded = resolve(handle, where, result);
  return result;
}

const LoadResult& load_once() {
  static const LoadResult result = load();  // thread-safe initialisation
  return result;
}

}  // namespace

const CusparseLibrary* try_load_cusparse() {
  const LoadResult& result = load_once();
  return result.loaded ? &result.library : nullptr;
}

std::string cusparse_load_error() { return load_once().error; }

const CusparseLibrary& cusparse_library() {
  const LoadResult& result = load_once();
  if (!result.loaded) throw Error(result.error);
  return result.library;
}

}  // namespace spattn::cuda

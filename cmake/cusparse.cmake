# Locates cusparse.h. spattn compiles against cuSPARSE's header only: the library is loaded at run time, on
# first use (cuda/cusparse_library.cpp), so that libspattn needs no libcusparse to load. The header comes
# from the CUDA toolkit when it ships it, else from the `nvidia` pip wheels that PyTorch's CUDA build
# installs (site-packages/nvidia/cu13/include). Sets SPATTN_CUSPARSE_INCLUDE_DIR, or leaves it empty: the
# build then has no cuSPARSE path.

set(SPATTN_CUSPARSE_INCLUDE_DIR "" CACHE PATH "Directory with cusparse.h (found automatically when empty)")

if(NOT SPATTN_CUSPARSE_INCLUDE_DIR)
  foreach(_include_dir IN LISTS CUDAToolkit_INCLUDE_DIRS)
    if(EXISTS "${_include_dir}/cusparse.h")
      set(SPATTN_CUSPARSE_INCLUDE_DIR "${_include_dir}" CACHE PATH "" FORCE)
      break()
    endif()
  endforeach()
endif()

if(NOT SPATTN_CUSPARSE_INCLUDE_DIR)
  if(NOT Python_EXECUTABLE)
    find_package(Python 3.9 COMPONENTS Interpreter)
  endif()
  if(Python_EXECUTABLE)
    # -I: ignore PYTHONPATH, so that under pip's isolated build we still see the target environment,
    # where torch (and with it the nvidia wheels) is installed.
    execute_process(
      COMMAND "${Python_EXECUTABLE}" -I -c
        "import importlib.util as u, pathlib as p; s = u.find_spec('nvidia'); print(next((str(p.Path(d) / 'cu${CUDAToolkit_VERSION_MAJOR}' / 'include') for d in (s.submodule_search_locations if s else []) if (p.Path(d) / 'cu${CUDAToolkit_VERSION_MAJOR}' / 'include' / 'cusparse.h').exists()), ''))"
      OUTPUT_VARIABLE _nvidia_include OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
    if(_nvidia_include)
      set(SPATTN_CUSPARSE_INCLUDE_DIR "${_nvidia_include}" CACHE PATH "" FORCE)
    endif()
  endif()
endif()

if(SPATTN_CUSPARSE_INCLUDE_DIR)
  message(STATUS "spattn: cuSPARSE header in ${SPATTN_CUSPARSE_INCLUDE_DIR} (the library is loaded at run time)")
else()
  message(STATUS "spattn: cusparse.h not found, building without the cuSPARSE backend")
endif()

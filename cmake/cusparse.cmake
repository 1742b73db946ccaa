# Locates cuSPARSE: from the CUDA toolkit when it ships it, else from the `nvidia` pip wheels that
# PyTorch's CUDA build installs (site-packages/nvidia/cu13/{include,lib}). Sets SPATTN_CUSPARSE_LIBRARY
# and SPATTN_CUSPARSE_INCLUDE_DIR, or leaves them empty: the build then has no cuSPARSE path.

set(SPATTN_CUSPARSE_LIBRARY "" CACHE FILEPATH "cuSPARSE shared library (found automatically when empty)")
set(SPATTN_CUSPARSE_INCLUDE_DIR "" CACHE PATH "Directory with cusparse.h (found automatically when empty)")

if(NOT SPATTN_CUSPARSE_LIBRARY AND TARGET CUDA::cusparse)
  get_target_property(_cusparse_location CUDA::cusparse LOCATION)
  if(_cusparse_location AND EXISTS "${_cusparse_location}")
    set(SPATTN_CUSPARSE_LIBRARY "${_cusparse_location}" CACHE FILEPATH "" FORCE)
    set(SPATTN_CUSPARSE_INCLUDE_DIR "${CUDAToolkit_INCLUDE_DIRS}" CACHE PATH "" FORCE)
  endif()
endif()

if(NOT SPATTN_CUSPARSE_LIBRARY)
  if(NOT Python_EXECUTABLE)
    find_package(Python 3.9 COMPONENTS Interpreter)
  endif()
  if(Python_EXECUTABLE)
    # -I: ignore PYTHONPATH, so that under pip's isolated build we still see the target environment,
    # where torch (and with it the nvidia wheels) is installed.
    execute_process(
      COMMAND "${Python_EXECUTABLE}" -I -c
        "import importlib.util as u, pathlib as p; s = u.find_spec('nvidia'); print(next((str(p.Path(d) / 'cu${CUDAToolkit_VERSION_MAJOR}') for d in (s.submodule_search_locations if s else []) if (p.Path(d) / 'cu${CUDAToolkit_VERSION_MAJOR}' / 'include' / 'cusparse.h').exists()), ''))"
      OUTPUT_VARIABLE _nvidia_root OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
    if(_nvidia_root)
      file(GLOB _cusparse_candidates "${_nvidia_root}/lib/libcusparse.so*")
      list(SORT _cusparse_candidates)
      list(LENGTH _cusparse_candidates _count)
      if(_count GREATER 0)
        list(GET _cusparse_candidates 0 _cusparse_library)
        set(SPATTN_CUSPARSE_LIBRARY "${_cusparse_library}" CACHE FILEPATH "" FORCE)
        set(SPATTN_CUSPARSE_INCLUDE_DIR "${_nvidia_root}/include" CACHE PATH "" FORCE)
      endif()
    endif()
  endif()
endif()

if(SPATTN_CUSPARSE_LIBRARY)
  message(STATUS "spattn: cuSPARSE ${SPATTN_CUSPARSE_LIBRARY}")
else()
  message(STATUS "spattn: cuSPARSE not found, building without the cuSPARSE backend")
endif()

# Installs headers, the shared library and a CMake package config, so C++ projects can
#   find_package(spattn CONFIG REQUIRED)  +  target_link_libraries(app PRIVATE spattn::spattn)
# Under scikit-build-core everything goes inside the Python package (site-packages/spattn/...), and
# `python -m spattn --cmake-dir` prints the folder to pass as spattn_DIR.

# The folders (SPATTN_INSTALL_*DIR) are set in the top-level CMakeLists.txt.

include(CMakePackageConfigHelpers)

# The installed library finds cuSPARSE next to itself in a wheel install (site-packages/nvidia/...) or
# where it was found at build time.
set(_rpath "$ORIGIN")
if(SPATTN_CUSPARSE_LIBRARY)
  get_filename_component(_cusparse_dir "${SPATTN_CUSPARSE_LIBRARY}" DIRECTORY)
  get_filename_component(_cusparse_leaf "${_cusparse_dir}" DIRECTORY)
  get_filename_component(_cusparse_leaf "${_cusparse_leaf}" NAME)
  if(SKBUILD)
    list(APPEND _rpath "$ORIGIN/../../nvidia/${_cusparse_leaf}/lib")
  endif()
  list(APPEND _rpath "${_cusparse_dir}")
endif()
set_target_properties(spattn PROPERTIES
  VERSION ${PROJECT_VERSION}
  SOVERSION ${PROJECT_VERSION_MAJOR}
  INSTALL_RPATH "${_rpath}")

install(TARGETS spattn EXPORT spattnTargets
  LIBRARY DESTINATION ${SPATTN_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${SPATTN_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${SPATTN_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${SPATTN_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/cpp/include/spattn DESTINATION ${SPATTN_INSTALL_INCLUDEDIR})
install(EXPORT spattnTargets NAMESPACE spattn:: DESTINATION ${SPATTN_INSTALL_CMAKEDIR})

configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/spattnConfig.cmake.in
  ${PROJECT_BINARY_DIR}/spattnConfig.cmake INSTALL_DESTINATION ${SPATTN_INSTALL_CMAKEDIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/spattnConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/spattnConfig.cmake ${PROJECT_BINARY_DIR}/spattnConfigVersion.cmake
  DESTINATION ${SPATTN_INSTALL_CMAKEDIR})

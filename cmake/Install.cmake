# Installs headers, the shared library and a CMake package config, so C++ projects can
#   find_package(spattn CONFIG REQUIRED)  +  target_link_libraries(app PRIVATE spattn::spattn)
# Under scikit-build-core everything goes inside the Python package (site-packages/spattn/...), and
# `python -m spattn --cmake-dir` prints the folder to pass as spattn_DIR.

# The folders (SPATTN_INSTALL_*DIR) are set in the top-level CMakeLists.txt.

include(CMakePackageConfigHelpers)

# No INSTALL_RPATH: libspattn needs nothing but system libraries (the CUDA runtime is static, cuSPARSE is
# loaded at run time), so a wheel names no folder of the machine that built it.
# A wheel cannot hold symlinks: libspattn.so.0 -> libspattn.so.0.1.0 would be two full copies there, so the
# versioned names are for system installs only.
if(NOT SKBUILD)
  set_target_properties(spattn PROPERTIES
    VERSION ${PROJECT_VERSION}
    SOVERSION ${PROJECT_VERSION_MAJOR})
endif()

install(TARGETS spattn EXPORT spattnTargets
  LIBRARY DESTINATION ${SPATTN_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${SPATTN_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${SPATTN_INSTALL_LIBDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/cpp/include/spattn DESTINATION ${SPATTN_INSTALL_INCLUDEDIR})
install(EXPORT spattnTargets NAMESPACE spattn:: DESTINATION ${SPATTN_INSTALL_CMAKEDIR})

configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/spattnConfig.cmake.in
  ${PROJECT_BINARY_DIR}/spattnConfig.cmake INSTALL_DESTINATION ${SPATTN_INSTALL_CMAKEDIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/spattnConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/spattnConfig.cmake ${PROJECT_BINARY_DIR}/spattnConfigVersion.cmake
  DESTINATION ${SPATTN_INSTALL_CMAKEDIR})

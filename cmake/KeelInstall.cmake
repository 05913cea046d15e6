# `cmake --install`: the shipped libraries, their public headers, the package files and the
# `keel` binary. Not installed: keel_testing (fixtures), keel_orders (the example domain), tests,
# benchmarks, fuzz targets.
#
# Layout: one static library per area (libkeel_core.a ... libkeel_proxy.a), exported as
# keel::core ... keel::proxy with their dependencies between them, and keel::keel, an INTERFACE
# target that links them all. Per-area archives rather than one merged libkeel: they are what the
# build already makes, so nothing is built twice or merged by hand, and a user who needs only
# keel::resilience links only libkeel_resilience and libkeel_core, without SQLite, libpq or
# yaml-cpp's areas. keel::keel (and keel.pc) is the one name for everything.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# Dependency order: each area before the areas it uses (keel.pc's -l list needs it).
set(KEEL_SHIPPED_AREAS node kafka proxy console cluster coord http cqrs pubsub eventlog balance shard resilience core)

add_library(keel_all INTERFACE)
set_target_properties(keel_all PROPERTIES EXPORT_NAME keel)
add_library(keel::keel ALIAS keel_all)

set(KEEL_PC_LIBS "")
foreach(area ${KEEL_SHIPPED_AREAS})
  set_target_properties(keel_${area} PROPERTIES EXPORT_NAME ${area})
  add_library(keel::${area} ALIAS keel_${area})
  target_link_libraries(keel_all INTERFACE keel_${area})
  string(APPEND KEEL_PC_LIBS " -lkeel_${area}")
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/src/keel/${area}/
          DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/keel/${area}
          FILES_MATCHING PATTERN "*.h"
          PATTERN "test_support.h" EXCLUDE  # test helpers
          PATTERN "*_impl.h" EXCLUDE)       # internals shared by an area's .cc files
  list(APPEND KEEL_SHIPPED_TARGETS keel_${area})
endforeach()
install(FILES ${PROJECT_BINARY_DIR}/generated/keel/core/version.h
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/keel/core)

install(TARGETS ${KEEL_SHIPPED_TARGETS} keel_all
        EXPORT keelTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT keelTargets
        NAMESPACE keel::
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/keel)

configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/keelConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/keelConfig.cmake
                              INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/keel)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/keelConfigVersion.cmake
                                 VERSION ${PROJECT_VERSION}
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/keelConfig.cmake ${PROJECT_BINARY_DIR}/keelConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/keel)

# keel.pc finds its prefix from its own place (${pcfiledir}), so an install moved or made with
# `cmake --install build --prefix DIR` works as it is.
file(RELATIVE_PATH KEEL_PC_PREFIX_FROM_PCDIR
     ${CMAKE_INSTALL_FULL_LIBDIR}/pkgconfig ${CMAKE_INSTALL_PREFIX})
configure_file(${PROJECT_SOURCE_DIR}/cmake/keel.pc.in ${PROJECT_BINARY_DIR}/keel.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/keel.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

install(TARGETS keel RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

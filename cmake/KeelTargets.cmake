# One helper per target kind, so warnings and sanitizers apply to all of our code alike.

set(KEEL_WARNINGS -Wall -Wextra -Werror -Wshadow -Wnon-virtual-dtor -Wold-style-cast
    -Woverloaded-virtual -Wimplicit-fallthrough
    # Designated initializers that leave fields at their defaults are the point of them.
    -Wno-missing-field-initializers)

set(KEEL_SANITIZER_FLAGS "")
if(KEEL_SANITIZE)
  set(KEEL_SANITIZER_FLAGS -fsanitize=address,undefined -fno-sanitize-recover=all
      -fno-omit-frame-pointer)
elseif(KEEL_TSAN)
  set(KEEL_SANITIZER_FLAGS -fsanitize=thread -fno-omit-frame-pointer)
  # Asio's handlers end in std::atomic_thread_fence, which TSan does not model; g++ warns about
  # every one. Our own code uses no standalone fences.
  list(APPEND KEEL_WARNINGS -Wno-tsan)
elseif(KEEL_FUZZ)
  set(KEEL_SANITIZER_FLAGS -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer)
endif()

function(_keel_common target)
  target_compile_options(${target} PRIVATE ${KEEL_WARNINGS} ${KEEL_SANITIZER_FLAGS})
  target_link_options(${target} PRIVATE ${KEEL_SANITIZER_FLAGS})
endfunction()

# keel_library(NAME SOURCES ... DEPS ...)
# Header-only dependencies that no public header includes (nlohmann-json, Boost) are given as
# $<BUILD_INTERFACE:...>: the build uses them, the installed keel::* targets do not carry them.
function(keel_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SOURCES})
  target_include_directories(${name} PUBLIC $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/src>)
  target_link_libraries(${name} PUBLIC ${ARG_DEPS} PRIVATE ${ARG_PRIVATE_DEPS})
  _keel_common(${name})
endfunction()

# keel_test(NAME SOURCES ... DEPS ... [LABELS ...]): a GoogleTest binary registered with ctest.
function(keel_test name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "SOURCES;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gmock GTest::gtest_main)
  _keel_common(${name})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 120)
  endif()
  add_test(NAME ${name} COMMAND ${name} --gtest_brief=1)
  set_tests_properties(${name} PROPERTIES TIMEOUT ${ARG_TIMEOUT} LABELS "unit;${ARG_LABELS}")
  set_property(GLOBAL APPEND PROPERTY KEEL_UNIT_TESTS ${name})
endfunction()

# keel_benchmark(NAME SOURCES ... DEPS ...): a Google Benchmark binary, never run by ctest.
function(keel_benchmark name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} benchmark::benchmark)
  _keel_common(${name})
endfunction()

# keel_fuzz(NAME SOURCES ... DEPS ... CORPUS dir): with KEEL_FUZZ a libFuzzer binary; otherwise
# the same target linked to a driver that replays the checked-in corpus, run by ctest.
function(keel_fuzz name)
  cmake_parse_arguments(ARG "" "CORPUS" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS})
  _keel_common(${name})
  if(KEEL_FUZZ)
    target_compile_options(${name} PRIVATE -fsanitize=fuzzer,address,undefined)
    target_link_options(${name} PRIVATE -fsanitize=fuzzer,address,undefined)
  else()
    target_sources(${name} PRIVATE ${PROJECT_SOURCE_DIR}/fuzz/corpus_driver.cc)
    add_test(NAME ${name}_corpus COMMAND ${name} ${ARG_CORPUS})
    set_tests_properties(${name}_corpus PROPERTIES TIMEOUT 120 LABELS "fuzz")
  endif()
endfunction()

# keel_area(LIBRARY PREFIX DEPS ...): one area folder. Every foo.cc joins the library, every
# foo_test.cc becomes the test binary PREFIX_foo_test, and every foo_benchmark.cc a benchmark.
function(keel_area library prefix)
  cmake_parse_arguments(ARG "" "" "DEPS" ${ARGN})
  file(GLOB sources CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/*.cc)
  list(FILTER sources EXCLUDE REGEX "_(test|benchmark)\\.cc$")
  keel_library(${library} SOURCES ${sources} DEPS ${ARG_DEPS})

  file(GLOB tests CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/*_test.cc)
  foreach(test ${tests})
    get_filename_component(name ${test} NAME_WE)
    keel_test(${prefix}_${name} SOURCES ${test} DEPS ${library})
  endforeach()

  if(KEEL_BENCH)
    file(GLOB benchmarks CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/*_benchmark.cc)
    foreach(benchmark ${benchmarks})
      get_filename_component(name ${benchmark} NAME_WE)
      keel_benchmark(${name} SOURCES ${benchmark} DEPS ${library})
    endforeach()
  endif()
endfunction()

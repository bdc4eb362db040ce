# Uniform compile options and helpers for kvmm's libraries and tests.

# -Wnull-dereference is left out: g++ 12 reports false positives inside std::vector at -O2.
set(KVMM_WARNINGS -Wall -Wextra -Wshadow -Wnon-virtual-dtor -Wcast-align -Wunused -Woverloaded-virtual
    -Wformat=2 -Wimplicit-fallthrough)
# -Wconversion -Wsign-conversion: the code merged before them (config, API host checks, qcow2,
# snapshots) is not clean under them yet, so they are off by default; a build with
# KVMM_CONVERSION_WARNINGS=ON shows what is left.
option(KVMM_CONVERSION_WARNINGS "GCC: -Wconversion -Wsign-conversion as errors" OFF)
if(KVMM_CONVERSION_WARNINGS AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  list(APPEND KVMM_WARNINGS -Wconversion -Wsign-conversion)
endif()
# Clang checks the GUARDED_BY/REQUIRES annotations (src/base/thread_annotations.h) in every build.
if(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
  list(APPEND KVMM_WARNINGS -Wthread-safety)
endif()
if(KVMM_WERROR)
  list(APPEND KVMM_WARNINGS -Werror)
endif()

set(KVMM_SANITIZER_FLAGS "")
if(KVMM_FUZZ)
  # Coverage instrumentation for libFuzzer in every library; the fuzz targets add the driver.
  set(KVMM_SANITIZER_FLAGS -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined
      -fno-omit-frame-pointer)
elseif(KVMM_SANITIZE)
  set(KVMM_SANITIZER_FLAGS -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
elseif(KVMM_TSAN)
  set(KVMM_SANITIZER_FLAGS -fsanitize=thread -fno-omit-frame-pointer)
endif()

# kvmm_library(NAME SOURCES a.cc b.cc DEPS other_lib ...)
function(kvmm_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SOURCES})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR}/src)
  target_compile_options(${name} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${KVMM_WARNINGS}> ${KVMM_SANITIZER_FLAGS})
  target_link_options(${name} PUBLIC ${KVMM_SANITIZER_FLAGS})
  target_link_libraries(${name} PUBLIC ${ARG_DEPS})
endfunction()

# kvmm_test(NAME SOURCES a_test.cc ... DEPS lib ... [LABEL unit|kvm])
# One GoogleTest binary; each test case is registered with CTest under the label.
function(kvmm_test name)
  if(NOT KVMM_BUILD_TESTS)
    return()
  endif()
  # SERIAL: the tests run alone (ctest's RUN_SERIAL), for liveness bounds measured while a
  # guest keeps a CPU busy, which another test on the other core would turn into noise.
  cmake_parse_arguments(ARG "SERIAL" "LABEL" "SOURCES;DEPS" ${ARGN})
  if(NOT ARG_LABEL)
    set(ARG_LABEL unit)
  endif()
  add_executable(${name} ${ARG_SOURCES})
  target_compile_options(${name} PRIVATE ${KVMM_WARNINGS} ${KVMM_SANITIZER_FLAGS})
  target_link_options(${name} PRIVATE ${KVMM_SANITIZER_FLAGS})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gtest_main GTest::gmock)
  # A GTEST_SKIP()ped test (e.g. the kvm tier without /dev/kvm) is reported by CTest as skipped,
  # never as passed.
  set(serial FALSE)
  if(ARG_SERIAL)
    set(serial TRUE)
  endif()
  gtest_discover_tests(${name} DISCOVERY_MODE PRE_TEST
                       PROPERTIES LABELS ${ARG_LABEL} SKIP_REGULAR_EXPRESSION "\\[  SKIPPED \\]"
                                  RUN_SERIAL ${serial}
                       WORKING_DIRECTORY ${PROJECT_BINARY_DIR})
endfunction()

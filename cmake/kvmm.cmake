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

# The kvmm program is linked statically (static-pie) by default: measured with
# bench/boot_bench.py, the dynamic loader's work and the shared libraries' symbol tables cost
# about 2.5 MiB of kvmm's 6.7 MiB peak RSS and a fraction of a millisecond of its start-up
# (docs/ARCHITECTURE.md, "Start-up and memory"). Only kvmm: the tests, kvmmd, kvmmctl and the
# jailer keep the shared libraries. Sanitizer runtimes need the dynamic loader, so
# instrumented builds link kvmm dynamically.
set(KVMM_STATIC_DEFAULT ON)
if(KVMM_SANITIZE OR KVMM_TSAN OR KVMM_FUZZ)
  set(KVMM_STATIC_DEFAULT OFF)
endif()
option(KVMM_STATIC_KVMM "Link the kvmm program statically (static-pie)" ${KVMM_STATIC_DEFAULT})

# A library's dependency that differs between the static kvmm and every other program: in a
# target linked with the KVMM_STATIC_EXECUTABLE property (the head target of the link),
# `static`; elsewhere `shared`. The libraries themselves compile against `shared` (their usage
# requirements are evaluated with the library as head), so their objects are the same for both.
set(KVMM_IN_STATIC_EXECUTABLE "$<BOOL:$<TARGET_PROPERTY:KVMM_STATIC_EXECUTABLE>>")
function(kvmm_shared_or_static variable shared static)
  set(${variable} "$<IF:${KVMM_IN_STATIC_EXECUTABLE},${static},${shared}>" PARENT_SCOPE)
endfunction()

# Static archives for the static kvmm. Debian ships libseccomp.a, liburing.a and libz.a with
# their -dev packages; fmt and spdlog have no archive, so kvmm_logging_static
# (src/base/logging_static_definitions.cc) compiles their out-of-line parts.
if(KVMM_STATIC_KVMM)
  foreach(archive z seccomp uring)
    string(TOUPPER ${archive} upper)
    find_library(KVMM_${upper}_ARCHIVE NAMES lib${archive}.a)
    if(NOT KVMM_${upper}_ARCHIVE)
      message(FATAL_ERROR "KVMM_STATIC_KVMM needs lib${archive}.a (the library's -dev package), which was not "
                          "found: install it or configure with -DKVMM_STATIC_KVMM=OFF")
    endif()
  endforeach()
endif()

# kvmm_static_executable(TARGET): links TARGET as a static PIE (ASLR kept) with unused sections
# dropped; its libraries' shared dependencies are replaced by the archives above.
function(kvmm_static_executable target)
  if(NOT KVMM_STATIC_KVMM)
    return()
  endif()
  set_target_properties(${target} PROPERTIES KVMM_STATIC_EXECUTABLE ON POSITION_INDEPENDENT_CODE ON)
  target_link_options(${target} PRIVATE -static-pie -Wl,--gc-sections)
endfunction()

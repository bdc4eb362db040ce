#!/usr/bin/env bash
# The project's test command: configures and builds the `release` preset (build/release) and
# runs every test tier through `ctest --preset release`: unit (no KVM) and kvm (test guests on
# /dev/kvm). Exits non-zero if the build or any test fails.
#
# Environment:
#   KVMM_JOBS       parallel build and test jobs (default 2: the reference machine has 2 cores)
#   KVMM_BUILD_DIR  build somewhere other than build/release (same preset settings); lets several
#                   people share one checkout without sharing a build tree
# Extra arguments go to ctest, e.g. `tools/test.sh -L unit` or `tools/test.sh -R Serial`.
set -euo pipefail
cd "$(dirname "$0")/.."

jobs="${KVMM_JOBS:-2}"
build_dir=(); test_dir=()
if [ -n "${KVMM_BUILD_DIR:-}" ]; then
  build_dir=(-B "$KVMM_BUILD_DIR")
  test_dir=(--test-dir "$KVMM_BUILD_DIR")
fi

echo "==== test.sh: configure (preset release) ===="
cmake --preset release "${build_dir[@]}"
echo "==== test.sh: build ===="
if [ -n "${KVMM_BUILD_DIR:-}" ]; then
  cmake --build "$KVMM_BUILD_DIR" -j "$jobs"
else
  cmake --build --preset release -j "$jobs"
fi
echo "==== test.sh: ctest (all tiers) ===="
# ctest ends with its summary ("N% tests passed, M tests failed out of T", time per label and
# the names of failed tests) and exits non-zero when any test failed.
status=0
ctest --preset release "${test_dir[@]}" -j "$jobs" --timeout 300 --no-tests=error "$@" || status=$?
if [ "$status" -ne 0 ]; then
  echo "==== test.sh: FAILED (ctest exit status $status) ===="
  exit "$status"
fi
echo "==== test.sh: all tests passed ===="

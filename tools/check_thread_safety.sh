#!/usr/bin/env bash
# Clang's thread-safety analysis (-Wthread-safety -Werror) over every source of src/, tests
# excluded, without building: each file is only parsed and analysed (-fsyntax-only), so the
# check takes minutes on two cores where an instrumented build (the `tsan` and `thread-safety`
# presets) takes half an hour. Fails on any finding, naming the file and the line. It also
# checks that the analysis is on at all: src/base/testing/thread_safety_violation.cc must be
# rejected.
# Usage: tools/check_thread_safety.sh   (Environment: KVMM_JOBS, default 2.)
set -euo pipefail
cd "$(dirname "$0")/.."
jobs="${KVMM_JOBS:-2}"
flags=(-std=c++20 -fsyntax-only -Wthread-safety -Werror -Isrc -DSPDLOG_FMT_EXTERNAL -DSPDLOG_COMPILED_LIB)

if clang++ "${flags[@]}" src/base/testing/thread_safety_violation.cc 2>/dev/null; then
  echo "thread-safety check: the analysis accepted a known violation; is it enabled?" >&2
  exit 1
fi

failed=0
git ls-files 'src/*.cc' | grep -v -e '_test\.cc$' -e '^src/base/testing/thread_safety_violation\.cc$' |
  xargs -P "$jobs" -I{} sh -c 'clang++ "$@" {} 2>&1 || { echo "thread-safety check failed: {}"; exit 1; }' \
    sh "${flags[@]}" || failed=1
if [ "$failed" -ne 0 ]; then
  echo "thread-safety check: findings above" >&2
  exit 1
fi
echo "thread-safety check: $(git ls-files 'src/*.cc' | grep -vc '_test\.cc$') sources clean"

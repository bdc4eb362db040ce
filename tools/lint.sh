#!/usr/bin/env bash
# Runs clang-tidy (profile: .clang-tidy) over kvmm's own translation units, using the
# compile_commands.json of a configured build (default build/release; configure it first with
# `cmake --preset release`). Prints the findings and exits non-zero if there are any: every
# finding of a check that .clang-tidy enables is an error.
# Usage: tools/lint.sh [--ci] [-p BUILD_DIR] [-j JOBS] [FILE-REGEX]   (e.g. tools/lint.sh 'src/devices/')
#   --ci  CI's scope and time bound: src/base, src/memory and the virtqueue (src/devices/virtio/
#         queue*), the code that is clean today, within KVMM_LINT_TIMEOUT seconds (default 1200;
#         about 3 minutes on 2 idle cores). The whole tree takes far longer and still has findings.
set -euo pipefail
cd "$(dirname "$0")/.."

CI_FILTER='/src/(base|memory)/[^/]*\.cc$|/src/devices/virtio/queue[^/]*\.cc$'
ci=0
if [ "${1:-}" = "--ci" ]; then
  ci=1
  shift
fi

build_dir=build/release
jobs="${KVMM_JOBS:-2}"
while getopts "p:j:" option; do
  case "$option" in
    p) build_dir="$OPTARG" ;;
    j) jobs="$OPTARG" ;;
    *) echo "usage: tools/lint.sh [-p BUILD_DIR] [-j JOBS] [FILE-REGEX]" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
filter="${1:-/(src|tests|bench)/.*\.cc$}"
time_limit=()
if [ "$ci" -eq 1 ]; then
  filter="${1:-$CI_FILTER}"
  time_limit=(timeout "${KVMM_LINT_TIMEOUT:-1200}")
fi

if [ ! -f "$build_dir/compile_commands.json" ]; then
  echo "lint: $build_dir/compile_commands.json is missing: configure first (cmake --preset release)" >&2
  exit 2
fi
# run-clang-tidy 14 always colours its output: strip the escapes, drop the per-file
# "N warnings generated" chatter, keep the findings with their source excerpts.
log=$(mktemp)
raw=$(mktemp)
trap 'rm -f "$log" "$raw"' EXIT
status=0
"${time_limit[@]}" run-clang-tidy -quiet -p "$build_dir" -j "$jobs" "$filter" >"$raw" 2>&1 || status=$?
sed -e 's/\x1b\[[0-9;]*m//g' "$raw" |
  grep -vE '^(clang-tidy-|[0-9]+ warnings? generated|Suppressed [0-9]+ warnings|Use -header-filter|Enabled checks)' \
    >"$log" || true
cat "$log"
if [ "$status" -eq 124 ]; then
  echo "lint: clang-tidy did not finish within ${KVMM_LINT_TIMEOUT:-1200} s"
  exit 1
fi
# A finding in a header is reported once per translation unit that includes it: count it once.
count=$(grep -E ': (warning|error): ' "$log" | sort -u | wc -l)
if [ "$count" -gt 0 ]; then
  echo "lint: $count findings"
  exit 1
fi
if [ "$status" -ne 0 ]; then
  echo "lint: run-clang-tidy exited with status $status"
  exit 1
fi
echo "lint: clean"

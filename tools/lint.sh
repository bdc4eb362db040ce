#!/usr/bin/env bash
# Runs clang-tidy (profile: .clang-tidy) over kvmm's own translation units, using the
# compile_commands.json of a configured build (default build/release; configure it first with
# `cmake --preset release`). Prints the findings and exits non-zero if there are any.
# Usage: tools/lint.sh [-p BUILD_DIR] [-j JOBS] [FILE-REGEX]   (e.g. tools/lint.sh 'src/devices/')
set -euo pipefail
cd "$(dirname "$0")/.."

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

if [ ! -f "$build_dir/compile_commands.json" ]; then
  echo "lint: $build_dir/compile_commands.json is missing: configure first (cmake --preset release)" >&2
  exit 2
fi
# run-clang-tidy 14 always colours its output: strip the escapes, drop the per-file
# "N warnings generated" chatter, keep the findings with their source excerpts.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
run-clang-tidy -quiet -p "$build_dir" -j "$jobs" "$filter" 2>&1 |
  sed -e 's/\x1b\[[0-9;]*m//g' |
  grep -vE '^(clang-tidy-|[0-9]+ warnings? generated|Suppressed [0-9]+ warnings|Use -header-filter|Enabled checks)' \
    >"$log" || true
cat "$log"
# A finding in a header is reported once per translation unit that includes it: count it once.
count=$(grep -E ': (warning|error): ' "$log" | sort -u | wc -l)
if [ "$count" -gt 0 ]; then
  echo "lint: $count findings"
  exit 1
fi
echo "lint: clean"

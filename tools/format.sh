#!/usr/bin/env bash
# Formats kvmm's C and C++ sources (*.h *.cc *.c under src/ tests/ bench/ fuzz/) with the
# checked-in .clang-format. With --check it changes nothing, prints each deviation and exits
# non-zero if any file is not formatted. Tracked and new (not git-ignored) files are covered.
# Optional file arguments restrict it to those files: tools/format.sh [--check] [FILE...]
set -euo pipefail
cd "$(dirname "$0")/.."

check=0
if [ "${1:-}" = "--check" ]; then
  check=1
  shift
fi
if [ "$#" -gt 0 ]; then
  files=("$@")
else
  mapfile -t files < <(git ls-files --cached --others --exclude-standard -- \
    'src/*.h' 'src/*.cc' 'src/*.c' 'tests/*.h' 'tests/*.cc' 'tests/*.c' \
    'bench/*.h' 'bench/*.cc' 'bench/*.c' 'fuzz/*.h' 'fuzz/*.cc' 'fuzz/*.c' | sort -u)
fi
if [ "${#files[@]}" -eq 0 ]; then
  echo "format: no files"
  exit 0
fi
echo "format: $(clang-format --version)"
if [ "$check" -eq 1 ]; then
  failed=()
  for file in "${files[@]}"; do
    clang-format --dry-run --Werror "$file" 2>/dev/null || failed+=("$file")
  done
  if [ "${#failed[@]}" -gt 0 ]; then
    for file in "${failed[@]}"; do
      clang-format "$file" | diff -u --label "$file" --label "$file (clang-format)" "$file" - || true
    done
    echo "format: ${#failed[@]} of ${#files[@]} files differ from .clang-format: ${failed[*]}"
    echo "format: run tools/format.sh to fix them"
    exit 1
  fi
  echo "format: ${#files[@]} files clean"
else
  clang-format -i "${files[@]}"
  echo "format: formatted ${#files[@]} files"
fi

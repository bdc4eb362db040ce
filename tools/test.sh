#!/usr/bin/env bash
# The test command: builds the release preset and runs every test tier
# (unit, kvm; tiers that cannot run on this host report themselves as skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc)"
ctest --preset release -j "$(nproc)" "$@"

#!/usr/bin/env bash
# Manager benchmark: define+start latency to "running" (median of 20) and VMs started per
# second (50 tiny guests started concurrently), through a real kvmmd in a temporary state dir.
# Usage: bench/manager_bench.sh [BUILD_DIR]   (default: build/release, then build/debug)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-}
if [[ -z $build ]]; then
  for candidate in "$root/build/release" "$root/build/debug"; do
    [[ -x $candidate/src/cli/kvmmd ]] && build=$candidate && break
  done
fi
[[ -n $build && -x $build/src/cli/kvmmd ]] || { echo "manager_bench: no build with kvmmd found; pass BUILD_DIR" >&2; exit 1; }
guest=$build/tests/guests/kvmm-test-guest.elf
state=$(mktemp -d /tmp/kvmm-manager-bench-XXXXXX)
socket=$state/kvmmd.sock
ctl() { "$build/src/cli/kvmmctl" --socket "$socket" "$@"; }
"$build/src/cli/kvmmd" --state-dir "$state" --kvmm "$build/src/cli/kvmm" --cgroup-parent "kvmm-bench-$$" \
  --log-level warn 2>"$state/kvmmd.log" &
daemon=$!
cleanup() {
  for name in $(ctl list --json 2>/dev/null | python3 -c 'import json,sys; [print(v["name"]) for v in json.load(sys.stdin)["vms"]]' 2>/dev/null); do
    ctl destroy "$name" >/dev/null 2>&1 || true
  done
  kill "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null || true
  rmdir /sys/fs/cgroup/{cpu,cpuacct,memory}/"kvmm-bench-$$" 2>/dev/null || true
  rm -rf "$state"
}
trap cleanup EXIT
for _ in $(seq 100); do [[ -S $socket ]] && break; sleep 0.05; done

definition() { printf 'name = "%s"\nmemory = 16\nkernel = "%s"\ncmdline = "test=idle"\n' "$1" "$guest" >"$state/$1.toml"; }

latencies=()
for i in $(seq 20); do
  definition "lat$i"
  start=$(date +%s%N)
  ctl define "$state/lat$i.toml" >/dev/null
  ctl start "lat$i" >/dev/null
  end=$(date +%s%N)
  latencies+=($(((end - start) / 1000)))
  ctl destroy "lat$i" >/dev/null
  ctl undefine "lat$i" >/dev/null
done
median=$(printf '%s\n' "${latencies[@]}" | sort -n | sed -n 10,11p | awk '{s+=$1} END {printf "%.1f", s/2/1000}')
echo "define+start to running: median ${median} ms over 20 (min $(printf '%s\n' "${latencies[@]}" | sort -n | head -1 | awk '{printf "%.1f", $1/1000}') ms)"

for i in $(seq 50); do definition "rate$i"; ctl define "$state/rate$i.toml" >/dev/null; done
start=$(date +%s%N)
for i in $(seq 50); do ctl start "rate$i" >/dev/null & done
wait $(jobs -p | grep -v "^$daemon$") 2>/dev/null || true
end=$(date +%s%N)
running=$(ctl list --json | python3 -c 'import json,sys; print(sum(v["state"]=="running" for v in json.load(sys.stdin)["vms"]))')
echo "50 VMs started concurrently: $running running after $(((end - start) / 1000000)) ms = $(awk -v n="$running" -v ns=$((end - start)) 'BEGIN {printf "%.1f", n/(ns/1e9)}') VMs/s"

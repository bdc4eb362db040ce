#!/usr/bin/env bash
# One-command demo on a fresh Debian 12 machine (run as root, e.g. `sudo tools/demo.sh`):
# installs the dependencies, builds the release preset, and boots the project's test guest
# under kvmm with its serial console on this terminal. kvmm exits when the guest powers off.
# Extra arguments are passed to kvmm (e.g. `tools/demo.sh --cpus 4 --cmdline "test=smp cpus=4"`).
set -euo pipefail
cd "$(dirname "$0")/.."

jobs="${KVMM_JOBS:-2}"
build_dir="${KVMM_BUILD_DIR:-build/release}" # as in tools/test.sh
echo "==== demo: installing dependencies ===="
bash tools/install-deps.sh

echo "==== demo: building (preset release) ===="
cmake --preset release -B "$build_dir" >/dev/null
cmake --build "$build_dir" -j "$jobs" --target kvmm kvmm_test_guest

if [ ! -e /dev/kvm ]; then
  echo "demo: /dev/kvm does not exist: load kvm_intel or kvm_amd (or enable nested virtualisation)" >&2
  exit 1
fi
if [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then
  echo "demo: /dev/kvm is not usable by $(id -un): run as root or join the kvm group" >&2
  exit 1
fi

kvmm="$build_dir/src/cli/kvmm"
guest="$build_dir/tests/guests/kvmm-test-guest.elf"
command=("$kvmm" --kernel "$guest" --cmdline test=hello --memory 64M --cpus 1 --console stdio)
if [ "$#" -gt 0 ]; then
  command=("$kvmm" --kernel "$guest" --memory 64M "$@")
fi
echo "==== demo: ${command[*]} ===="
status=0
"${command[@]}" || status=$?
echo "==== demo: kvmm exited with status $status (0: the guest powered off or reset) ===="
exit "$status"

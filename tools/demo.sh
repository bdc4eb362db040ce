#!/usr/bin/env bash
# One-command demo on a fresh Debian 12 machine (as root, or as a user with sudo, which the
# dependency install uses where it must; /dev/kvm must be usable by the user):
# installs the dependencies, builds the release preset, and boots a Linux VM (Debian's kernel,
# busybox initramfs) under kvmm, showing its console. Where this host's /dev/kvm cannot boot
# Linux (no VT-x/AMD-V underneath), the VM runs inside the nested test host and says so.
# With arguments, runs kvmm with them on the freestanding test guest instead
# (e.g. `tools/demo.sh --cpus 4 --cmdline "test=smp cpus=4"`).
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

kvmm="$(pwd)/$build_dir/src/cli/kvmm"
if [ "$#" -gt 0 ]; then
  # Extra arguments: run kvmm with them against the freestanding test guest.
  guest="$build_dir/tests/guests/kvmm-test-guest.elf"
  echo "==== demo: $kvmm --kernel $guest --memory 64M $* ===="
  status=0
  "$kvmm" --kernel "$guest" --memory 64M "$@" || status=$?
  exit "$status"
fi

# The main demo: a real Linux VM - Debian's cloud kernel and a busybox initramfs, built from
# Debian packages by tools/guest - booted by kvmm with 2 vCPUs and 512 MiB.
show='echo; echo "== inside the kvmm VM =="; uname -a; echo "vCPUs: $(nproc)"; grep MemTotal /proc/meminfo; cat /proc/cmdline; dmesg | grep -E "ACPI: (RSDP|FACP|APIC)|smpboot: Total|rtc_cmos.*rtc0" '
run=$(printf '%s' "$show" | base64 -w0)
if tools/testhost/needs-testhost.sh; then
  echo "==== demo: this host's /dev/kvm has no hardware virtualisation underneath, so Linux cannot boot"
  echo "==== on it directly: booting the Linux VM inside the nested test host (an L1 VM under QEMU TCG"
  echo "==== with SVM and nested paging, tools/testhost). This takes about 30-60 seconds."
  status=0
  tools/testhost/run-in-testhost.sh --timeout 600 --binary "$kvmm" -- \
    sh -c "\"$kvmm\" --kernel /guest/bzImage --initrd /guest/initrd.cpio.gz --cpus 2 --memory 512M \
           --log-level info --cmdline \"\$(cat /guest/cmdline) quiet kvmm.run=$run\"" || status=$?
else
  cache="${KVMM_CACHE_DIR:-build/guest-cache}"
  tools/guest/build-guest.sh "$cache/guest"
  echo "==== demo: booting Linux under kvmm; the guest's shell is on this terminal (exit or poweroff ends it)"
  status=0
  "$kvmm" --kernel "$cache/guest/bzImage" --initrd "$cache/guest/initrd.cpio.gz" --cpus 2 --memory 512M \
    --log-level info --cmdline "$(cat "$cache/guest/cmdline")" || status=$?
fi
echo "==== demo: finished with status $status (0: the Linux guest powered off) ===="
exit "$status"

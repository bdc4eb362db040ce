#!/usr/bin/env bash
# Installs every Debian 12 package kvmm needs to build, test, lint and benchmark.
# Idempotent (installs only what is missing; a second run changes nothing) and non-interactive.
# Runs as root, or as a user with sudo.
set -euo pipefail

PACKAGES=(
  # Toolchain and build.
  cmake ninja-build g++ ccache pkg-config git
  # Libraries.
  libfmt-dev libspdlog-dev libcli11-dev nlohmann-json3-dev liburing-dev libseccomp-dev zlib1g-dev
  # Tests and micro-benchmarks.
  libgtest-dev libgmock-dev libbenchmark-dev
  # Management definitions (kvmmd), TAP tests (ip), the block benchmark peer (fio).
  libtomlplusplus-dev iproute2 fio curl
  # Style and lint (tools/format.sh, tools/lint.sh).
  clang-format clang-tidy clang libclang-rt-14-dev
  # bench/boot_bench.py (standard library only).
  python3
  # Peer VMM for the start-up benchmark, and the L1 test host of the Linux tier.
  qemu-system-x86
  # qcow2 interoperability tests (qemu-img create, check, compare, convert).
  qemu-utils
  # Linux guest assets: busybox initramfs (cpio newc), ext4 images, LZ4 kernels, module lists.
  busybox-static cpio e2fsprogs lz4 kmod
  # Firmware boot (kvmm --firmware): SeaBIOS's microvm build, /usr/share/seabios/bios-microvm.bin.
  seabios
)

run_as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    echo "install-deps: must run as root (sudo is not available)" >&2
    exit 1
  fi
}

missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
run_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
run_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "install-deps: done"

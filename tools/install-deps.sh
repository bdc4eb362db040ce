#!/usr/bin/env bash
# Installs every Debian 12 package kvmm needs to build, test and benchmark.
# Idempotent and non-interactive; run as root (or with sudo available).
set -euo pipefail

PACKAGES=(
  cmake ninja-build g++ ccache pkg-config
  libfmt-dev libspdlog-dev libcli11-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev libbenchmark-dev liburing-dev libseccomp-dev
  clang-format clang-tidy
  python3
  # Peer VMM for the benchmarks, and the software CPU that hosts the Linux tier.
  qemu-system-x86
  # Linux test guest assets: busybox, cpio archives, ext4 images, LZ4 kernel payloads.
  busybox-static cpio e2fsprogs lz4 kmod
)

run_as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
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
export DEBIAN_FRONTEND=noninteractive
run_as_root apt-get update -q
run_as_root apt-get install -y -q --no-install-recommends "${missing[@]}"

#!/usr/bin/env bash
# Builds the libFuzzer targets (preset `fuzz`, clang, ASan+UBSan) and runs each for a bounded
# time: tools/fuzz.sh [SECONDS_PER_TARGET] (default 60). Corpora live in build/fuzz/corpus/;
# the kernel loader starts from the test guest ELF when a release build has produced one.
# Exits non-zero when a target finds a crash (the reproducer is left in build/fuzz/).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
jobs="${KVMM_JOBS:-2}"

# Every target: the parsers of guest-controlled data (kernel images, device registers, virtqueues
# and each virtio device's requests), of disk image metadata (qcow2), of saved state, of the control plane (HTTP, API
# bodies), of the jailer's inputs, of guest output shown on a terminal and of write recordings.
# The same list as fuzz/CMakeLists.txt.
targets=(kernel_loader legacy_devices legacy_state virtio_queue virtio_transport virtio_state block net vsock balloon
  http_parser api_body virtio_device_state hypervisor_state machine_state qcow2 fw_cfg jailer_input terminal_filter
  write_log)

cmake --preset fuzz >/dev/null
cmake --build --preset fuzz -j "$jobs" --target "${targets[@]/%/_fuzzer}"

# The working corpus starts from the checked-in regression corpus (fuzz/corpus/TARGET): inputs
# that once found bugs or reach deep paths, so every run re-checks them first.
corpus=build/fuzz/corpus
for target in "${targets[@]}"; do
  mkdir -p "$corpus/$target"
  if [ -d "fuzz/corpus/$target" ]; then
    cp -n fuzz/corpus/"$target"/* "$corpus/$target/" 2>/dev/null || true
  fi
done
if [ -f build/release/tests/guests/kvmm-test-guest.elf ]; then
  cp build/release/tests/guests/kvmm-test-guest.elf "$corpus/kernel_loader/test-guest.elf"
fi
for target in "${targets[@]}"; do
  echo "==== fuzz: ${target}_fuzzer for ${seconds}s ===="
  status=0
  (cd build/fuzz && "./fuzz/${target}_fuzzer" -max_total_time="$seconds" -rss_limit_mb=2048 \
     -print_final_stats=1 "corpus/$target" >"$target.log" 2>&1) || status=$?
  grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|==[0-9]+==|SUMMARY)' "build/fuzz/$target.log" || true
  if [ "$status" -ne 0 ]; then
    tail -40 "build/fuzz/$target.log"
    echo "==== fuzz: ${target}_fuzzer FAILED (status $status) ===="
    exit "$status"
  fi
done
echo "==== fuzz: no crash found ===="

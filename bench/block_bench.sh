#!/bin/bash
# Compares the virtio-blk device model (bench/block_bench.cc) with fio on the same 1 GiB file
# in the same run: 4 KiB random reads and 1 MiB sequential reads, 32 requests in flight.
#
# fio --direct=0 goes through the page cache like the device's engine does, so device/fio is
# the device model's overhead; --direct=1 (O_DIRECT, no page cache) is printed for reference.
#
# Usage: bench/block_bench.sh [build-dir]   (a Release build with block_bench built)
set -euo pipefail

BUILD=${1:-build/release}
BENCH=$BUILD/bench/block_bench
RUNTIME=${RUNTIME:-5}
[[ -x $BENCH ]] || { echo "no $BENCH: build the block_bench target first" >&2; exit 1; }
command -v fio >/dev/null || { echo "fio is not installed" >&2; exit 1; }

IMAGE=$(mktemp /var/tmp/kvmm-block-bench-XXXXXX)
trap 'rm -f "$IMAGE" "$IMAGE".*.json' EXIT
# Sparse first, then written once so every read hits an allocated block.
truncate -s 1G "$IMAGE"
dd if=/dev/urandom of="$IMAGE" bs=1M count=1024 conv=notrunc status=none

echo "== device model (io_uring engine, page cache)"
KVMM_BLOCK_BENCH_IMAGE=$IMAGE "$BENCH" --benchmark_min_time="$RUNTIME" --benchmark_format=json \
    --benchmark_out="$IMAGE.device.json" --benchmark_out_format=json >/dev/null

# --invalidate=0: fio would otherwise drop the file's page cache first, and the buffered runs
# would measure the disk instead of the page-cache path the device model used.
run_fio() { # name rw bs direct
    fio --name="$1" --filename="$IMAGE" --size=1G --rw="$2" --bs="$3" --iodepth=32 \
        --ioengine=io_uring --direct="$4" --invalidate=0 --runtime="$RUNTIME" --time_based --group_reporting \
        --output-format=json --output="$IMAGE.fio-$1.json" >/dev/null
}
echo "== fio"
run_fio randread-buffered randread 4k 0
run_fio read-buffered read 1M 0
run_fio randread-direct randread 4k 1
run_fio read-direct read 1M 1

python3 - "$IMAGE" <<'PY'
import json, sys
image = sys.argv[1]
device = {b["name"]: b for b in json.load(open(image + ".device.json"))["benchmarks"]}
def fio(name):
    job = json.load(open(f"{image}.fio-{name}.json"))["jobs"][0]["read"]
    return job["iops"], job["bw_bytes"] / 1e6
dev_iops = next(v for k, v in device.items() if k.startswith("BM_RandomRead4KiB"))["items_per_second"]
dev_mbs = next(v for k, v in device.items() if k.startswith("BM_SequentialRead1MiB"))["bytes_per_second"] / 1e6
buffered_iops, _ = fio("randread-buffered")
_, buffered_mbs = fio("read-buffered")
direct_iops, _ = fio("randread-direct")
_, direct_mbs = fio("read-direct")
print(f"{'workload':<24}{'device':>14}{'fio buffered':>14}{'fio direct':>14}{'device/buffered':>17}{'device/direct':>15}")
print(f"{'4 KiB random read IOPS':<24}{dev_iops:>14.0f}{buffered_iops:>14.0f}{direct_iops:>14.0f}"
      f"{dev_iops / buffered_iops:>17.2f}{dev_iops / direct_iops:>15.2f}")
print(f"{'1 MiB seq read MB/s':<24}{dev_mbs:>14.0f}{buffered_mbs:>14.0f}{direct_mbs:>14.0f}"
      f"{dev_mbs / buffered_mbs:>17.2f}{dev_mbs / direct_mbs:>15.2f}")
PY

#!/usr/bin/env bash
# Linux I/O benchmark: kvmm against QEMU microvm, the same Debian guest (tools/guest) with a
# virtio-blk disk and a virtio-net TAP interface (virtio-mmio in both), alternating, in one
# boot of the nested test host (or directly where /dev/kvm boots Linux). Reports medians of
# the guest's sequential O_DIRECT read rate (1 MiB blocks), random 4 KiB O_DIRECT reads per
# second, and TCP throughput guest -> host over the TAP, with kvmm/QEMU ratios.
# Not part of CI. QEMU's disk is "-drive format=raw" with its defaults (cache=writeback,
# aio=threads); kvmm's is "--disk path=" with its defaults (io_uring engine).
# Usage: bench/linux_io_bench.sh [RUNS=3] [DISK_MIB=128] [NET_MIB=32]
#   KVMM=path/to/kvmm (default build/release/src/cli/kvmm)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-3}
disk_mib=${2:-128}
net_mib=${3:-32}
kvmm=${KVMM:-$repo/build/release/src/cli/kvmm}
[ -x "$kvmm" ] || { echo "linux_io_bench: $kvmm missing: build the release preset or set KVMM" >&2; exit 1; }
kvmm=$(cd "$(dirname "$kvmm")" && pwd)/$(basename "$kvmm")
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if "$repo/tools/testhost/needs-testhost.sh"; then
    where="L2 guest in the nested test host (L1 under QEMU TCG): L2 runs at ~1/13 of native speed"
    "$repo/tools/testhost/run-in-testhost.sh" --timeout 1800 --with-qemu --binary "$kvmm" --share "$repo/bench" \
        -- sh "$repo/bench/linux-io-inner.sh" "$kvmm" /guest "$runs" "$disk_mib" "$net_mib" |
        tee "$log" | grep -E '^IO'
else
    where="guest directly on this host's /dev/kvm"
    cache=${KVMM_CACHE_DIR:-$repo/build/guest-cache}
    "$repo/tools/guest/build-guest.sh" "$cache/guest" >&2
    sh "$repo/bench/linux-io-inner.sh" "$kvmm" "$cache/guest" "$runs" "$disk_mib" "$net_mib" |
        tee "$log" | grep -E '^IO'
fi
if ! tr -d '\r' <"$log" | grep -q '^IO '; then
    echo "linux_io_bench: no measurement (see the output above)" >&2
    exit 1
fi
echo "Numbers: $where; read the ratios, not the absolute values."
tr -d '\r' <"$log" | awk -v disk="$disk_mib" -v net="$net_mib" '
    function median(values, count,    i, j, t) {
        for (i = 1; i <= count; i++) for (j = i + 1; j <= count; j++)
            if (values[j] < values[i]) { t = values[i]; values[i] = values[j]; values[j] = t }
        return count % 2 ? values[(count + 1) / 2] : (values[count / 2] + values[count / 2 + 1]) / 2
    }
    $1 == "IO" { k = ++n[$2]; seq[$2, k] = $3; iops[$2, k] = $4; tcp[$2, k] = $5 }
    END {
        for (vmm in n) {
            for (i = 1; i <= n[vmm]; i++) { a[i] = seq[vmm, i]; b[i] = iops[vmm, i]; c[i] = tcp[vmm, i] }
            s[vmm] = median(a, n[vmm]); r[vmm] = median(b, n[vmm]); t[vmm] = median(c, n[vmm])
            printf "%-5s seq read %.1f MB/s (%d MiB)  random 4k read %.0f IOPS  TCP guest->host %.1f MB/s (%d MiB)  (median of %d)\n",
                vmm, s[vmm], disk, r[vmm], t[vmm], net, n[vmm]
        }
        if (s["qemu"] > 0 && r["qemu"] > 0 && t["qemu"] > 0)
            printf "kvmm/qemu: seq read %.3f  random read %.3f  TCP %.3f  (above 1: kvmm faster)\n",
                s["kvmm"] / s["qemu"], r["kvmm"] / r["qemu"], t["kvmm"] / t["qemu"]
    }'

#!/usr/bin/env bash
# Linux boot benchmark: kvmm against QEMU microvm booting the same Debian kernel and initramfs
# (tools/guest) with the same vCPUs and memory, alternating, in one boot of the nested test
# host (or directly where /dev/kvm boots Linux). Reports medians of the time from start to the
# guest's readiness marker (its /init ran), to process exit (after power-off), and peak RSS,
# with kvmm/QEMU ratios. Numbers from inside the test host are L2 numbers: ~1/13 native speed.
# Usage: bench/linux_boot_bench.sh [RUNS=5] [VCPUS=1] [MEMORY_MIB=256]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-5}
vcpus=${2:-1}
memory=${3:-256}
kvmm=$repo/build/release/src/cli/kvmm
[ -x "$kvmm" ] || { echo "linux_boot_bench: $kvmm missing: build the release preset" >&2; exit 1; }
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if "$repo/tools/testhost/needs-testhost.sh"; then
    "$repo/tools/testhost/run-in-testhost.sh" --timeout 1500 --with-qemu --binary "$kvmm" --share "$repo/bench" \
        -- sh "$repo/bench/linux-boot-inner.sh" "$kvmm" /guest "$runs" "$vcpus" "$memory" | tee "$log" | grep -E '^BOOT'
else
    cache=${KVMM_CACHE_DIR:-$repo/build/guest-cache}
    "$repo/tools/guest/build-guest.sh" "$cache/guest" >&2
    sh "$repo/bench/linux-boot-inner.sh" "$kvmm" "$cache/guest" "$runs" "$vcpus" "$memory" | tee "$log" | grep -E '^BOOT'
fi
tr -d '\r' <"$log" | awk -v runs="$runs" '
    function median(values, count,    i, j, t) {
        for (i = 1; i <= count; i++) for (j = i + 1; j <= count; j++)
            if (values[j] < values[i]) { t = values[i]; values[i] = values[j]; values[j] = t }
        return count % 2 ? values[(count + 1) / 2] : (values[count / 2] + values[count / 2 + 1]) / 2
    }
    $1 == "BOOT" { n[$2]++; ready[$2, n[$2]] = $3; done[$2, n[$2]] = $4; rss[$2, n[$2]] = $5 }
    END {
        for (vmm in n) {
            for (i = 1; i <= n[vmm]; i++) { a[i] = ready[vmm, i]; b[i] = done[vmm, i]; c[i] = rss[vmm, i] }
            r[vmm] = median(a, n[vmm]); d[vmm] = median(b, n[vmm]); m[vmm] = median(c, n[vmm])
            printf "%-5s ready %.2f s  exit %.2f s  peak RSS %.1f MiB  (median of %d)\n", vmm, r[vmm], d[vmm], m[vmm] / 1024, n[vmm]
        }
        if (r["qemu"] > 0)
            printf "kvmm/qemu: ready %.3f  exit %.3f  RSS %.3f\n", r["kvmm"] / r["qemu"], d["kvmm"] / d["qemu"], m["kvmm"] / m["qemu"]
    }'

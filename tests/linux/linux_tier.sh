#!/usr/bin/env bash
# CTest entry of the Linux tier: builds the Debian guest assets (tools/guest), then runs
# run-batch.sh with the given kvmm binary - directly where /dev/kvm can boot Linux, otherwise
# in the nested test host (tools/testhost; one boot, more only after a stall). Never skips: a missing tool, a test
# host failure or a failed case is a failure.
# Usage: linux_tier.sh KVMM_BINARY
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
kvmm=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")

if "$repo/tools/testhost/needs-testhost.sh"; then
    echo "linux tier: this host's /dev/kvm cannot boot Linux; running in the nested test host"
    # The L1 runs on QEMU's software CPU; it has been seen to stall for good (no console
    # output, no timer) in a small fraction of boots. Such a stall is an infrastructure
    # failure (status 125, reported on stderr), distinct from a failed case: a new L1 then
    # goes on with the cases that have no verdict yet. A case that failed stays failed.
    # One L1 vCPU: with two, L1 (and L2 with it) was seen to break in about one run of four -
    # L2 crashing or hanging, L1 resetting itself or going silent - mostly under the balloon
    # case's churn of L2 memory; with one, 8 balloon runs and 3 whole tiers in a row passed.
    # The tier then takes about 3 minutes instead of 2.
    log=$(mktemp)
    earlier_results=$(mktemp)
    trap 'rm -f "$log" "$earlier_results"' EXIT
    done_cases=()
    for attempt in 1 2 3; do
        status=0
        "$repo/tools/testhost/run-in-testhost.sh" --cpus 1 --timeout 900 --stall 240 --binary "$kvmm" --share "$here" \
            --binary qemu-img --binary e2fsck \
            -- sh "$here/run-batch.sh" "$kvmm" /guest "${done_cases[@]}" | tee "$log" || status=${PIPESTATUS[0]}
        if [[ $status -ne 125 ]]; then
            if grep '^LINUX-TEST [^ ]* FAIL' "$earlier_results" >&2; then
                echo "linux tier: the cases above failed before the test host was restarted" >&2
                exit 1
            fi
            exit "$status"
        fi
        tr -d '\r' <"$log" | grep '^LINUX-TEST ' >>"$earlier_results" || true
        mapfile -t done_cases < <(awk '{ print $2 }' "$earlier_results" | sort -u)
        echo "linux tier: the test host failed (status 125) on attempt $attempt;" \
            "${#done_cases[@]} cases have a verdict and are not run again" >&2
    done
    exit 125
else
    cache=${KVMM_CACHE_DIR:-$repo/build/guest-cache}
    "$repo/tools/guest/build-guest.sh" "$cache/guest"
    sh "$here/run-batch.sh" "$kvmm" "$cache/guest"
fi

#!/usr/bin/env bash
# CTest entry of the Linux tier: builds the Debian guest assets (tools/guest), then runs
# run-batch.sh with the given kvmm binary - directly where /dev/kvm can boot Linux, otherwise
# in one boot of the nested test host (tools/testhost). Never skips: a missing tool, a test
# host failure or a failed case is a failure.
# Usage: linux_tier.sh KVMM_BINARY
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
kvmm=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")

if "$repo/tools/testhost/needs-testhost.sh"; then
    echo "linux tier: this host's /dev/kvm cannot boot Linux; running in the nested test host"
    # The L1 runs on QEMU's software CPU; it has been seen to stall for good (no console output,
    # no timer) in a small fraction of boots. Such a stall is an infrastructure failure (status
    # 125, reported on stderr), distinct from a failed case, and gets one more attempt.
    for attempt in 1 2; do
        status=0
        "$repo/tools/testhost/run-in-testhost.sh" --timeout 900 --binary "$kvmm" --share "$here" \
            -- sh "$here/run-batch.sh" "$kvmm" /guest || status=$?
        if [ "$status" -ne 125 ]; then
            exit "$status"
        fi
        echo "linux tier: the test host failed (status 125) on attempt $attempt" >&2
    done
    exit 125
else
    cache=${KVMM_CACHE_DIR:-$repo/build/guest-cache}
    "$repo/tools/guest/build-guest.sh" "$cache/guest"
    sh "$here/run-batch.sh" "$kvmm" "$cache/guest"
fi

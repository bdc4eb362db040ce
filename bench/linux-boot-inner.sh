#!/bin/sh
# Inner half of linux_boot_bench.sh, run where /dev/kvm boots Linux (the test host's L1):
# boots the Debian guest alternately under kvmm and QEMU microvm, RUNS times each, and prints
# per-run lines and medians. Time comes from /proc/uptime (10 ms resolution); peak RSS is the
# last VmHWM seen while polling the VMM every 20 ms.
# Usage: linux-boot-inner.sh KVMM GUEST_DIR RUNS VCPUS MEMORY_MIB
kvmm=$1
guest=$2
runs=$3
vcpus=$4
memory=$5
cmdline="$(cat "$guest/cmdline") quiet kvmm.run=$(printf true | base64 -w0)"
now() { cut -d' ' -f1 /proc/uptime; }

# measure NAME COMMAND...: prints "BOOT NAME ready_s exit_s peak_rss_kib"
measure() {
    name=$1
    shift
    out=/tmp/bench-$name.out
    start=$(now)
    "$@" </dev/null >"$out" 2>&1 &
    pid=$!
    ready=""
    rss=0
    while kill -0 "$pid" 2>/dev/null; do
        hwm=$(awk '/VmHWM/ { print $2 }' "/proc/$pid/status" 2>/dev/null)
        [ -n "$hwm" ] && rss=$hwm
        if [ -z "$ready" ] && grep -q KVMM-GUEST-READY "$out"; then ready=$(now); fi
        sleep 0.02
    done
    wait "$pid"
    end=$(now)
    [ -z "$ready" ] && ready=$end
    if ! grep -q "KVMM-GUEST-EXIT 0" "$out"; then
        echo "BOOT-FAILED $name"
        tail -n 20 "$out"
        return 1
    fi
    awk -v n="$name" -v s="$start" -v r="$ready" -v e="$end" -v m="$rss" \
        'BEGIN { printf "BOOT %s %.2f %.2f %d\n", n, r - s, e - s, m }'
}

for run in $(seq 1 "$runs"); do
    measure kvmm timeout 300 "$kvmm" --kernel "$guest/bzImage" --initrd "$guest/initrd.cpio.gz" \
        --cmdline "$cmdline" --cpus "$vcpus" --memory "${memory}M" --console stdio || exit 1
    measure qemu timeout 300 qemu-system-x86_64 -M microvm,x-option-roms=off,rtc=on,isa-serial=on \
        -accel kvm -cpu host -m "${memory}M" -smp "$vcpus" -nodefaults -no-user-config -display none \
        -no-reboot -serial stdio -kernel "$guest/bzImage" -initrd "$guest/initrd.cpio.gz" \
        -append "$cmdline" || exit 1
done

#!/bin/sh
# The Linux tier's test cases, run where /dev/kvm can boot Linux: inside the test host's L1
# (tools/testhost) or directly on a host with hardware virtualisation. POSIX sh (busybox in L1).
# Usage: run-batch.sh KVMM_BINARY GUEST_DIR
# Prints one "LINUX-TEST <name> PASS|FAIL <detail>" line per case, then a summary line;
# exits 0 only when every case passed.
kvmm=$1
guest=$2
cmdline="$(cat "$guest/cmdline") quiet"
work=${TMPDIR:-/tmp}/kvmm-linux-tier
mkdir -p "$work"
passed=0
failed=0

result() { # name PASS|FAIL detail
    echo "LINUX-TEST $1 $2 $3"
    if [ "$2" = PASS ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
}

# boot NAME COMMAND KVMM-ARGS...: boots the guest running COMMAND (through kvmm.run, base64),
# leaves the console in $work/NAME.out and kvmm's log in $work/NAME.err, sets $status.
boot() {
    name=$1
    command=$2
    shift 2
    encoded=$(printf '%s' "$command" | base64 -w0)
    timeout 180 "$kvmm" --initrd "$guest/initrd.cpio.gz" --cmdline "$cmdline ${extra_cmdline:-}kvmm.run=$encoded" \
        --log-level info "$@" </dev/null >"$work/$name.raw" 2>"$work/$name.err"
    status=$?
    tr -d '\r' <"$work/$name.raw" >"$work/$name.out" # the guest's tty ends lines with CR LF
}

# expect NAME PATTERN...: passes when kvmm exited 0, the guest's command exited 0 and every
# pattern (a grep -E expression) is in the console output.
expect() {
    name=$1
    shift
    if [ "$status" -ne 0 ]; then
        result "$name" FAIL "kvmm exit status $status: $(tail -n 3 "$work/$name.err" | tr '\n' ' ')"
        return
    fi
    if ! grep -q "KVMM-GUEST-EXIT 0" "$work/$name.out"; then
        result "$name" FAIL "guest command did not exit 0: $(tail -n 5 "$work/$name.out" | tr '\n' ' ')"
        return
    fi
    for pattern in "$@"; do
        if ! grep -q -E "$pattern" "$work/$name.out"; then
            result "$name" FAIL "missing '$pattern': $(tail -n 8 "$work/$name.out" | tr '\n' ' ')"
            return
        fi
    done
    result "$name" PASS "$(grep -o 'KVMM-GUEST-READY uptime=[0-9.]*' "$work/$name.out")"
}

boot bzimage-1-vcpu 'echo "nproc=$(nproc)"; uname -r' --kernel "$guest/bzImage" --cpus 1 --memory 256M
expect bzimage-1-vcpu '^nproc=1' 'cloud-amd64'

boot pvh-vmlinux-2-vcpus 'echo "nproc=$(nproc)"' --kernel "$guest/vmlinux" --cpus 2 --memory 256M
expect pvh-vmlinux-2-vcpus '^nproc=2'

boot bzimage-4-vcpus 'echo "cpus=$(grep -c ^processor /proc/cpuinfo)"' --kernel "$guest/bzImage" --cpus 4 \
    --memory 512M
expect bzimage-4-vcpus '^cpus=4'

# 3.25 GiB: RAM continues above 4 GiB; the guest must see nearly all of it.
boot memory-across-gap 'awk "/MemTotal/ { print \"memtotal_mib=\" int(\$2 / 1024) }" /proc/meminfo' \
    --kernel "$guest/bzImage" --cpus 1 --memory 3328M
expect memory-across-gap '^memtotal_mib=3(1[5-9][0-9]|2[0-9][0-9])$'

# The kernel accepted our ACPI tables without complaint; the RTC, the i8042 and kvmclock are in use.
boot dmesg-clean 'dmesg | grep -i -E "ACPI (Error|Warning)|ACPI BIOS (Error|Warning)|firmware bug|FW_BUG" && echo dmesg=dirty || echo dmesg=clean; dmesg | grep -o "rtc_cmos.*registered as rtc0"; dmesg | grep -q "serio: i8042 KBD port" && echo i8042=found; cat /sys/devices/system/clocksource/clocksource0/current_clocksource' \
    --kernel "$guest/bzImage" --cpus 2 --memory 256M
expect dmesg-clean '^dmesg=clean' 'registered as rtc0' '^i8042=found' '^kvm-clock'

# reboot -f: kvmm ends with status 0 and says the guest reset.
boot reboot 'reboot -f' --kernel "$guest/bzImage" --cpus 1 --memory 256M
if [ "$status" -eq 0 ] && grep -q "guest reset" "$work/reboot.err"; then
    result reboot PASS "kvmm exit 0, guest reset"
else
    result reboot FAIL "status $status: $(tail -n 3 "$work/reboot.err" | tr '\n' ' ')"
fi

# virtio entropy: the guest's hwrng core picks virtio_rng and reads from it.
boot virtio-rng 'echo "rng=$(cat /sys/class/misc/hw_random/rng_current)"; echo "bytes=$(head -c 65536 /dev/hwrng | wc -c)"' \
    --kernel "$guest/bzImage" --cpus 1 --memory 256M --rng
expect virtio-rng '^rng=virtio_rng' '^bytes=65536$'

# virtio console: with console=hvc0 the command's output reaches kvmm's stdout through hvc0;
# the 16550 is silent. (/init's own marker lines go to the console /init started with, ttyS0,
# because virtio_console is a module loaded by /init: so only the command's output is checked.)
extra_cmdline="console=hvc0 "
boot virtio-console 'echo "console=$(cat /sys/class/tty/console/active)"; echo "hvc-$((6 * 7))"' \
    --kernel "$guest/bzImage" --cpus 1 --memory 256M --console-device virtio
extra_cmdline=
if [ "$status" -eq 0 ] && grep -q '^console=.*hvc0' "$work/virtio-console.out" &&
    grep -q '^hvc-42' "$work/virtio-console.out" && ! grep -q 'KVMM-GUEST-READY' "$work/virtio-console.out"; then
    result virtio-console PASS "command output through hvc0 only"
else
    result virtio-console FAIL "status $status: $(tail -n 5 "$work/virtio-console.out" | tr '\n' ' ')"
fi

# Interactive console: type a command at the guest's shell through kvmm's stdin.
rm -f "$work/console.in"
mkfifo "$work/console.in"
timeout 180 "$kvmm" --kernel "$guest/bzImage" --initrd "$guest/initrd.cpio.gz" --cmdline "$cmdline" \
    --cpus 1 --memory 256M --log-level info <"$work/console.in" >"$work/console.out" 2>"$work/console.err" &
kvmm_pid=$!
exec 3>"$work/console.in"
waited=0
while ! grep -q "KVMM-GUEST-READY" "$work/console.out" 2>/dev/null && [ "$waited" -lt 120 ]; do
    sleep 1
    waited=$((waited + 1))
done
sleep 2
echo 'echo "typed-$((6 * 7))"' >&3
sleep 3
echo 'exit' >&3
wait "$kvmm_pid"
status=$?
exec 3>&-
if [ "$status" -eq 0 ] && grep -q "^typed-42" "$work/console.out"; then
    result interactive-console PASS "shell answered through the serial console"
else
    result interactive-console FAIL "status $status: $(tail -n 5 "$work/console.out" | tr '\n' ' ')"
fi

echo "linux tier: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

#!/bin/sh
# The Linux tier's test cases, run where /dev/kvm can boot Linux: inside the test host's L1
# (tools/testhost) or directly on a host with hardware virtualisation. POSIX sh (busybox in L1).
# Usage: run-batch.sh KVMM_BINARY GUEST_DIR [DONE_CASE...]
# Prints "LINUX-CASE <name>" as a case starts and one "LINUX-TEST <name> PASS|FAIL <detail>"
# line per case, then a summary line; exits 0 only when every case run passed. Cases named
# as DONE_CASE are not run again (linux_tier.sh resumes a test host that stalled this way).
kvmm=$1
guest=$2
shift 2
done_cases=" $* "
cmdline="$(cat "$guest/cmdline") quiet"
tool=$guest/kvmm-guest-tool # tools/guest/kvmm-guest-tool.c; /bin/kvmm-guest-tool in the guest
work=${TMPDIR:-/tmp}/kvmm-linux-tier
mkdir -p "$work"
passed=0
failed=0

# want CASE...: true when at least one of the CASEs is still to be run (cases that depend on
# each other's data are named together and run again together); says which case starts.
want() {
    for wanted in "$@"; do
        case $done_cases in
            *" $wanted "*) ;;
            *) echo "LINUX-CASE $*"; return 0 ;;
        esac
    done
    return 1
}

result() { # name PASS|FAIL detail...
    verdict=$2
    echo "LINUX-TEST $*"
    if [ "$verdict" = PASS ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
}

# boot NAME COMMAND KVMM-ARGS...: boots the guest running COMMAND (through kvmm.run, base64),
# leaves the console in $work/NAME.out and kvmm's log in $work/NAME.err, sets $status.
boot() {
    start_boot "$@"
    finish_boot
}

# start_boot NAME COMMAND KVMM-ARGS...: as boot, but kvmm runs in the background (for cases
# that act on the host side while the guest runs); $kvmm_pid is its process. finish_boot
# waits for it and sets $status.
start_boot() {
    name=$1
    command=$2
    shift 2
    encoded=$(printf '%s' "$command" | base64 -w0)
    rm -f "$work/$name.out"
    : >"$work/$name.raw" # before kvmm starts, so that wait_console can read it at once
    timeout 180 "$kvmm" --initrd "$guest/initrd.cpio.gz" --cmdline "$cmdline ${extra_cmdline:-}kvmm.run=$encoded" \
        --log-level info "$@" </dev/null >"$work/$name.raw" 2>"$work/$name.err" &
    kvmm_pid=$!
}
finish_boot() {
    wait "$kvmm_pid"
    status=$?
    tr -d '\r' <"$work/$name.raw" >"$work/$name.out" # the guest's tty ends lines with CR LF
}

# wait_console PATTERN SECONDS: waits until the running boot's console has a line matching
# PATTERN (grep -E); fails when the time is up or kvmm has exited.
wait_console() {
    waited=0
    while ! tr -d '\r' <"$work/$name.raw" | grep -q -E "$1"; do
        if [ "$waited" -ge $(($2 * 5)) ] || ! kill -0 "$kvmm_pid" 2>/dev/null; then
            return 1
        fi
        sleep 0.2
        waited=$((waited + 1))
    done
}

# vmm_process PID: the kvmm process itself - PID, or PID's child where `timeout` did not
# exec kvmm in place (coreutils' timeout forks; busybox's does not).
vmm_process() {
    case "$(readlink "/proc/$1/exe")" in
        */kvmm) echo "$1"; return ;;
    esac
    for stat in /proc/[0-9]*/stat; do
        # pid (comm) state ppid ...: comm has no blank for kvmm.
        set -- "$1" $(cat "$stat" 2>/dev/null)
        if [ "${5:-}" = "$1" ] && [ "${3:-}" = "(kvmm)" ]; then
            echo "$2"
            return
        fi
    done
}

# rss_mib PID: the resident set of a process in MiB (VmRSS, proc(5)).
rss_mib() {
    awk '/^VmRSS:/ { print int($2 / 1024) }' "/proc/$1/status"
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

if want bzimage-1-vcpu; then
    boot bzimage-1-vcpu 'echo "nproc=$(nproc)"; uname -r' --kernel "$guest/bzImage" --cpus 1 --memory 256M
    expect bzimage-1-vcpu '^nproc=1' 'cloud-amd64'
fi

if want pvh-vmlinux-2-vcpus; then
    boot pvh-vmlinux-2-vcpus 'echo "nproc=$(nproc)"' --kernel "$guest/vmlinux" --cpus 2 --memory 256M
    expect pvh-vmlinux-2-vcpus '^nproc=2'
fi

if want bzimage-4-vcpus; then
    boot bzimage-4-vcpus 'echo "cpus=$(grep -c ^processor /proc/cpuinfo)"' --kernel "$guest/bzImage" --cpus 4 \
        --memory 512M
    expect bzimage-4-vcpus '^cpus=4'
fi

# 3.25 GiB: RAM continues above 4 GiB; the guest must see nearly all of it.
if want memory-across-gap; then
    boot memory-across-gap 'awk "/MemTotal/ { print \"memtotal_mib=\" int(\$2 / 1024) }" /proc/meminfo' \
        --kernel "$guest/bzImage" --cpus 1 --memory 3328M
    expect memory-across-gap '^memtotal_mib=3(1[5-9][0-9]|2[0-9][0-9])$'
fi

# The kernel accepted our ACPI tables without complaint; the RTC, the i8042 and kvmclock are in use.
if want dmesg-clean; then
    boot dmesg-clean 'dmesg | grep -i -E "ACPI (Error|Warning)|ACPI BIOS (Error|Warning)|firmware bug|FW_BUG" && echo dmesg=dirty || echo dmesg=clean; dmesg | grep -o "rtc_cmos.*registered as rtc0"; dmesg | grep -q "serio: i8042 KBD port" && echo i8042=found; cat /sys/devices/system/clocksource/clocksource0/current_clocksource' \
        --kernel "$guest/bzImage" --cpus 2 --memory 256M
    expect dmesg-clean '^dmesg=clean' 'registered as rtc0' '^i8042=found' '^kvm-clock'
fi

# reboot -f: kvmm ends with status 0 and says the guest reset.
if want reboot; then
    boot reboot 'reboot -f' --kernel "$guest/bzImage" --cpus 1 --memory 256M
    if [ "$status" -eq 0 ] && grep -q "guest reset" "$work/reboot.err"; then
        result reboot PASS "kvmm exit 0, guest reset"
    else
        result reboot FAIL "status $status: $(tail -n 3 "$work/reboot.err" | tr '\n' ' ')"
    fi
fi

# virtio entropy: the guest's hwrng core picks virtio_rng and reads from it.
if want virtio-rng; then
    boot virtio-rng 'echo "rng=$(cat /sys/class/misc/hw_random/rng_current)"; echo "bytes=$(head -c 65536 /dev/hwrng | wc -c)"' \
        --kernel "$guest/bzImage" --cpus 1 --memory 256M --rng
    expect virtio-rng '^rng=virtio_rng' '^bytes=65536$'
fi

# virtio console: with console=hvc0 the command's output reaches kvmm's stdout through hvc0;
# the 16550 is silent. (/init's own marker lines go to the console /init started with, ttyS0,
# because virtio_console is a module loaded by /init: so only the command's output is checked.)
if want virtio-console; then
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
fi

# Interactive console: type a command at the guest's shell through kvmm's stdin.
if want interactive-console; then
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
fi

# virtio-net on a TAP interface of this host: ping, then bulk TCP both ways (kvmm-guest-tool:
# busybox nc stops sending once its peer half-closes). The TAP is made persistent here
# (busybox tunctl in the test host, iproute2 elsewhere) so that it has its address before
# the guest starts.
if want virtio-net; then
    net_mib=16
    tap=kvmmtap0
    ip link delete "$tap" 2>/dev/null
    if { tunctl -t "$tap" || ip tuntap add dev "$tap" mode tap; } >"$work/tap.log" 2>&1 && ip addr add 10.0.2.1/24 dev "$tap" && ip link set "$tap" up; then
        "$tool" tcp-sink 5000 >"$work/net-host-sink.out" 2>&1 &
        sink_pid=$!
        start_boot virtio-net "ip link set lo up; ip addr add 10.0.2.15/24 dev eth0 && ip link set eth0 up &&
            ping -c 3 -W 10 10.0.2.1 | grep 'packets transmitted' &&
            kvmm-guest-tool tcp-send 10.0.2.1 5000 $net_mib && kvmm-guest-tool tcp-sink 5001" \
            --kernel "$guest/bzImage" --cpus 1 --memory 256M --net "tap=$tap,mac=52:54:00:12:34:56"
        if wait_console 'tcp-send: sent=' 150; then
            "$tool" tcp-send 10.0.2.15 5001 "$net_mib" >"$work/net-host-send.out" 2>&1
        fi
        finish_boot
        kill "$sink_pid" 2>/dev/null
        wait "$sink_pid"
        bytes=$((net_mib * 1024 * 1024))
        if [ "$status" -eq 0 ] && grep -q "^tcp-sink: received=$bytes " "$work/net-host-sink.out"; then
            expect virtio-net ' 0% packet loss' "^tcp-send: sent=$bytes " "^tcp-sink: received=$bytes "
            echo "LINUX-METRIC virtio-net guest-to-host $(sed -n 's/.*MBps=//p' "$work/net-host-sink.out") MB/s," \
                "host-to-guest $(sed -n 's/^tcp-sink:.*MBps=//p' "$work/virtio-net.out") MB/s ($net_mib MiB each, L2 under TCG)"
        else
            result virtio-net FAIL "status $status, host sink: $(cat "$work/net-host-sink.out"), console: $(tail -n 8 "$work/virtio-net.out" | tr '\n' ' ')"
        fi
    else
        result virtio-net FAIL "cannot set up TAP $tap: $(cat "$work/tap.log")"
    fi
    ip link delete "$tap" 2>/dev/null
fi

# virtio-vsock, Firecracker's hybrid Unix-socket host side, both ways in one boot.
# guest->host: the guest connects to CID 2 port 6000, which kvmm forwards to ${uds}_6000,
# where an echo server listens. host->guest: "CONNECT 5000" on $uds reaches the guest's echo
# server. 1 MiB each way (more than the default 256 KiB vsock buffer: credit updates).
if want virtio-vsock; then
    uds=$work/vsock.sock
    rm -f "$uds" "${uds}_6000"
    head -c 1048576 /dev/urandom >"$work/vsock-payload"
    "$tool" uds-echo-server "${uds}_6000" 1 >"$work/vsock-host-echo.out" 2>&1 &
    echo_pid=$!
    start_boot virtio-vsock 'timeout 120 kvmm-guest-tool vsock-echo-server 5000 1 & server=$!
        head -c 1048576 /dev/urandom >/tmp/payload
        kvmm-guest-tool vsock-connect 2 6000 </tmp/payload >/tmp/echoed && cmp /tmp/payload /tmp/echoed &&
            echo "guest-to-host=echoed $(wc -c </tmp/echoed)"
        wait $server && echo "host-to-guest=served"' \
        --kernel "$guest/bzImage" --cpus 1 --memory 256M --vsock "cid=3,uds=$uds"
    rm -f "$work/vsock-echoed"
    if wait_console 'KVMM-GUEST-READY' 120; then
        "$tool" uds-connect "$uds" 5000 <"$work/vsock-payload" >"$work/vsock-echoed" 2>"$work/vsock-host-connect.err"
    fi
    finish_boot
    kill "$echo_pid" 2>/dev/null
    wait "$echo_pid"
    if cmp -s "$work/vsock-payload" "$work/vsock-echoed"; then
        expect virtio-vsock '^guest-to-host=echoed 1048576$' '^host-to-guest=served$'
    else
        result virtio-vsock FAIL "host->guest echo differs ($(wc -c <"$work/vsock-echoed") of 1048576 bytes back;" \
            "$(cat "$work/vsock-host-connect.err")); console: $(tail -n 6 "$work/virtio-vsock.out" | tr '\n' ' ')"
    fi
fi

# virtio-balloon: kvmm asks for 256 MiB of the guest's 512 MiB from the start. Without
# VIRTIO_BALLOON_F_DEFLATE_ON_OOM the driver takes inflated pages off MemTotal
# (drivers/virtio/virtio_balloon.c, adjust_managed_page_count), so MemTotal shows the balloon.
# The host side: the guest unloads the driver (the balloon deflates), touches 320 MiB and
# frees it, then loads the driver again; the re-inflated balloon takes pages the guest had
# touched, and kvmm must give them back to the host (madvise), so its resident set shrinks.
if want virtio-balloon; then
    balloon_module=kernel/drivers/virtio/virtio_balloon.ko
    start_boot virtio-balloon 'memtotal() { awk "/^MemTotal:/ { print int(\$2 / 1024) }" /proc/meminfo; }
        settle() { i=0; while [ "$(memtotal)" -gt 240 ] && [ $i -lt 90 ]; do sleep 1; i=$((i + 1)); done; }
        settle; echo "inflated_memtotal_mib=$(memtotal)"
        rmmod virtio_balloon || exit 1
        echo "deflated_memtotal_mib=$(memtotal)"
        kvmm-guest-tool alloc 320 || exit 1
        echo BALLOON-TOUCHED; sleep 3
        insmod "/lib/modules/$(uname -r)/'"$balloon_module"'" || exit 1
        settle; echo "reinflated_memtotal_mib=$(memtotal)"
        echo BALLOON-INFLATED; sleep 3' \
        --kernel "$guest/bzImage" --cpus 1 --memory 512M --balloon size=256M,stats=1
    rss_touched=
    rss_inflated=
    if wait_console '^BALLOON-TOUCHED' 150; then
        sleep 1
        rss_touched=$(rss_mib "$(vmm_process "$kvmm_pid")")
        if wait_console '^BALLOON-INFLATED' 120; then
            sleep 1
            rss_inflated=$(rss_mib "$(vmm_process "$kvmm_pid")")
        fi
    fi
    finish_boot
    echo "LINUX-METRIC virtio-balloon kvmm VmRSS ${rss_touched:-?} MiB after the guest touched 320 MiB," \
        "${rss_inflated:-?} MiB after the balloon took 256 MiB back"
    if [ -z "$rss_touched" ] || [ -z "$rss_inflated" ]; then
        result virtio-balloon FAIL "no RSS sample (status $status): $(tail -n 6 "$work/virtio-balloon.out" | tr '\n' ' ')" \
            "kvmm: $(tail -n 4 "$work/virtio-balloon.err" | tr '\n' ' ')"
    elif [ $((rss_touched - rss_inflated)) -lt 128 ]; then
        result virtio-balloon FAIL "kvmm's VmRSS fell only from $rss_touched to $rss_inflated MiB (expected >= 128 MiB less)"
    else
        # 512 MiB guest: MemTotal about 480-500 MiB without the balloon, 256 MiB less with it.
        expect virtio-balloon '^inflated_memtotal_mib=2[0-4][0-9]$' '^deflated_memtotal_mib=(4[6-9][0-9]|50[0-9])$' \
            '^reinflated_memtotal_mib=2[0-4][0-9]$'
    fi
fi

# virtio-blk on a raw image in this host's file system, written and read by the guest with
# kvmm-guest-tool's deterministic data (fill/verify: 1 MiB blocks of xorshift64* output).
# 1. write in one boot (io_uring engine), clean shutdown; the image file holds the data.
if want virtio-blk-write virtio-blk-readonly virtio-blk-flush; then
    disk=$work/disk.img
    rm -f "$disk"
    dd if=/dev/zero of="$disk" bs=1M count=64 2>/dev/null
    boot virtio-blk-write 'echo "sectors=$(cat /sys/block/vda/size) ro=$(cat /sys/block/vda/ro)"
        kvmm-guest-tool fill /dev/vda 32 11' \
        --kernel "$guest/bzImage" --cpus 1 --memory 256M --disk "path=$disk,engine=io_uring"
    if "$tool" verify "$disk" 32 11 >"$work/blk-host-verify.out" 2>&1; then
        expect virtio-blk-write '^sectors=131072 ro=0$' '^fill: wrote=32MiB'
    else
        result virtio-blk-write FAIL "the image does not hold the guest's data: $(cat "$work/blk-host-verify.out")," \
            "status $status, console: $(tail -n 5 "$work/virtio-blk-write.out" | tr '\n' ' ')"
    fi

    # 2. a new kvmm, the same image, read-only: the data of boot 1 reads back, the guest sees a
    # read-only disk and cannot write, and the image is unchanged.
    sum_before=$(md5sum <"$disk")
    boot virtio-blk-readonly 'echo "ro=$(cat /sys/block/vda/ro)"; kvmm-guest-tool verify /dev/vda 32 11
        if kvmm-guest-tool fill /dev/vda 1 99; then echo write=accepted; else echo write=refused; fi; sync' \
        --kernel "$guest/bzImage" --cpus 1 --memory 256M --disk "path=$disk,readonly=on"
    if [ "$(md5sum <"$disk")" = "$sum_before" ]; then
        expect virtio-blk-readonly '^ro=1$' '^verify: ok=32MiB' '^write=refused$'
    else
        result virtio-blk-readonly FAIL "the read-only image changed (status $status)"
    fi

    # 3. flush: fill ends with fsync, which the guest turns into VIRTIO_BLK_T_FLUSH (write-back
    # cache); once it returns the data must be in the image even if kvmm dies at once (kill -9).
    # Synchronous engine here, so both engines are covered.
    boot_flush='kvmm-guest-tool fill /dev/vda 8 23 && echo BLK-FLUSHED && sleep 120'
    start_boot virtio-blk-flush "$boot_flush" --kernel "$guest/bzImage" --cpus 1 --memory 256M \
        --disk "path=$disk,cache=writeback,engine=sync"
    killed=no
    if wait_console '^BLK-FLUSHED' 150; then
        kill -KILL "$(vmm_process "$kvmm_pid")" && killed=yes
    fi
    finish_boot
    if [ "$killed" = yes ] && "$tool" verify "$disk" 8 23 >"$work/blk-host-verify.out" 2>&1; then
        result virtio-blk-flush PASS "data in the image after kill -9 following the guest's fsync"
    else
        result virtio-blk-flush FAIL "killed=$killed, $(cat "$work/blk-host-verify.out" 2>/dev/null)," \
            "console: $(tail -n 5 "$work/virtio-blk-flush.out" | tr '\n' ' ')"
    fi
fi

# 4. root file system on the disk: rootfs.ext4 (tools/guest) with root=on; kvmm adds
# "root=/dev/vda rw" and /init switches to it (tools/guest/init.sh).
if want virtio-blk-root; then
    cp "$guest/rootfs.ext4" "$work/rootfs.ext4"
    boot virtio-blk-root 'awk "\$2 == \"/\" { print \"root=\" \$1 \" \" \$3 }" /proc/mounts
        touch /root/written && echo root-writable=yes' \
        --kernel "$guest/bzImage" --cpus 1 --memory 256M --disk "path=$work/rootfs.ext4,root=on"
    expect virtio-blk-root '^root=/dev/vda ext4$' '^root-writable=yes$'
    rm -f "$work/rootfs.ext4"
fi
rm -f "$work/disk.img"

# 4b. the root file system on a qcow2 overlay of the raw rootfs.ext4 (made by qemu-img, backing
# name relative to the overlay): the guest writes a file into ext4; the base is unchanged, the
# overlay passes `qemu-img check`, its flattened content passes `e2fsck -fn`, and a second boot
# from that flattened (raw) copy reads the file back. qemu-img and e2fsck are the host's
# (copied into the test host by linux_tier.sh); missing, the case fails.
if want virtio-blk-root-qcow2; then
    cp "$guest/rootfs.ext4" "$work/base.ext4"
    rm -f "$work/root.qcow2" "$work/flat.ext4"
    base_sum=$(md5sum <"$work/base.ext4")
    detail=""
    if ! (cd "$work" && qemu-img create -q -f qcow2 -F raw -b base.ext4 root.qcow2) >"$work/qcow2.log" 2>&1; then
        detail="qemu-img create: $(cat "$work/qcow2.log")"
    fi
    if [ -z "$detail" ]; then
        boot virtio-blk-root-qcow2 'awk "\$2 == \"/\" { print \"root=\" \$1 \" \" \$3 }" /proc/mounts
            dd if=/dev/urandom of=/root/qcow2-data bs=64k count=64 2>/dev/null && sync
            echo "written=$(md5sum </root/qcow2-data | cut -d" " -f1)"' \
            --kernel "$guest/bzImage" --cpus 1 --memory 256M --disk "path=$work/root.qcow2,format=qcow2,root=on"
        written=$(sed -n 's/^written=\([0-9a-f]*\)$/\1/p' "$work/virtio-blk-root-qcow2.out")
        if [ "$status" -ne 0 ] || [ -z "$written" ]; then
            detail="first boot: status $status, $(tail -n 5 "$work/virtio-blk-root-qcow2.out" | tr '\n' ' ')"
        elif [ "$(md5sum <"$work/base.ext4")" != "$base_sum" ]; then
            detail="the base image changed"
        elif ! qemu-img check -q -f qcow2 "$work/root.qcow2" >"$work/qcow2.log" 2>&1; then
            detail="qemu-img check: $(cat "$work/qcow2.log")"
        elif ! qemu-img convert -f qcow2 -O raw "$work/root.qcow2" "$work/flat.ext4" >"$work/qcow2.log" 2>&1; then
            detail="qemu-img convert: $(cat "$work/qcow2.log")"
        elif ! e2fsck -fn "$work/flat.ext4" >"$work/qcow2.log" 2>&1; then
            detail="e2fsck: $(tail -n 5 "$work/qcow2.log" | tr '\n' ' ')"
        fi
    fi
    if [ -z "$detail" ]; then
        boot virtio-blk-root-qcow2-reread 'echo "read=$(md5sum </root/qcow2-data | cut -d" " -f1)"' \
            --kernel "$guest/bzImage" --cpus 1 --memory 256M --disk "path=$work/flat.ext4,root=on"
        if ! grep -q "^read=$written\$" "$work/virtio-blk-root-qcow2-reread.out"; then
            detail="second boot did not read the file back ($written): status $status,"
            detail="$detail $(tail -n 5 "$work/virtio-blk-root-qcow2-reread.out" | tr '\n' ' ')"
        fi
    fi
    if [ -z "$detail" ]; then
        result virtio-blk-root-qcow2 PASS "ext4 on a qcow2 overlay: written, checked, read back raw"
    else
        result virtio-blk-root-qcow2 FAIL "$detail"
    fi
    rm -f "$work/base.ext4" "$work/root.qcow2" "$work/flat.ext4"
fi

# 4c. kill -9 in the middle of writes to a qcow2 image (every first write allocates clusters, so
# metadata is changing): the data the guest fsynced before is in the image, and `qemu-img
# check` finds no corruption (exit 0, or 3: leaked clusters only, which a crash may leave).
if want virtio-blk-qcow2-kill; then
    rm -f "$work/kill.qcow2" "$work/kill.raw"
    detail=""
    if ! qemu-img create -q -f qcow2 "$work/kill.qcow2" 64M >"$work/qcow2.log" 2>&1; then
        detail="qemu-img create: $(cat "$work/qcow2.log")"
    else
        start_boot virtio-blk-qcow2-kill 'kvmm-guest-tool fill /dev/vda 8 23 && echo BLK-FLUSHED
            dd if=/dev/urandom of=/dev/vda bs=64k seek=256 count=64 2>/dev/null; echo BLK-WRITING
            while :; do dd if=/dev/urandom of=/dev/vda bs=64k seek=128 count=512 2>/dev/null; done' \
            --kernel "$guest/bzImage" --cpus 1 --memory 256M --disk "path=$work/kill.qcow2,format=qcow2"
        killed=no
        if wait_console '^BLK-WRITING' 150; then
            sleep 1
            kill -KILL "$(vmm_process "$kvmm_pid")" && killed=yes
        fi
        finish_boot
        qemu-img check -f qcow2 "$work/kill.qcow2" >"$work/qcow2.log" 2>&1
        check_status=$?
        if [ "$killed" != yes ]; then
            detail="kvmm was not killed mid-write: $(tail -n 5 "$work/$name.out" | tr '\n' ' ')"
        elif [ "$check_status" -ne 0 ] && [ "$check_status" -ne 3 ]; then
            detail="qemu-img check exit $check_status: $(tail -n 5 "$work/qcow2.log" | tr '\n' ' ')"
        elif ! qemu-img convert -f qcow2 -O raw "$work/kill.qcow2" "$work/kill.raw" >"$work/qcow2.log" 2>&1; then
            detail="qemu-img convert: $(cat "$work/qcow2.log")"
        elif ! "$tool" verify "$work/kill.raw" 8 23 >"$work/qcow2.log" 2>&1; then
            detail="the fsynced data: $(cat "$work/qcow2.log")"
        fi
    fi
    if [ -z "$detail" ]; then
        result virtio-blk-qcow2-kill PASS "fsynced data kept, qemu-img check exit $check_status after kill -9"
    else
        result virtio-blk-qcow2-kill FAIL "$detail"
    fi
    rm -f "$work/kill.qcow2" "$work/kill.raw"
fi

# 5. PATCH /drives path_on_host while the guest runs (kvmm configured by a config file, with
# its API socket): the drive moves from a 16 MiB image to a 32 MiB one holding known data;
# the guest learns the new capacity from the configuration-change interrupt and reads the
# second image's data (after dropping what its page cache kept of the first). Then the host
# grows that image to 48 MiB and PATCHes the same path (Firecracker's way to announce a
# resize): the guest sees the new size.
if want virtio-blk-move; then
    name=virtio-blk-move
    dd if=/dev/zero of="$work/move-a.img" bs=1M count=16 2>/dev/null
    dd if=/dev/zero of="$work/move-b.img" bs=1M count=32 2>/dev/null
    "$tool" fill "$work/move-b.img" 8 31 >/dev/null
    command='echo "sectors=$(cat /sys/block/vda/size)"; echo BLK-MOVE-READY
        i=0; while [ "$(cat /sys/block/vda/size)" = 32768 ] && [ $i -lt 90 ]; do sleep 1; i=$((i + 1)); done
        echo "moved_sectors=$(cat /sys/block/vda/size)"; echo 3 >/proc/sys/vm/drop_caches
        kvmm-guest-tool verify /dev/vda 8 31 && echo BLK-MOVE-VERIFIED
        i=0; while [ "$(cat /sys/block/vda/size)" = 65536 ] && [ $i -lt 90 ]; do sleep 1; i=$((i + 1)); done
        echo "grown_sectors=$(cat /sys/block/vda/size)"'
    cat >"$work/move.json" <<EOF
{
    "boot-source": { "kernel_image_path": "$guest/bzImage", "initrd_path": "$guest/initrd.cpio.gz",
                     "boot_args": "$cmdline kvmm.run=$(printf '%s' "$command" | base64 -w0)" },
    "machine-config": { "vcpu_count": 1, "mem_size_mib": 256 },
    "drives": [ { "drive_id": "data", "path_on_host": "$work/move-a.img", "is_root_device": false,
                  "is_read_only": false } ]
}
EOF
    rm -f "$work/api.sock"
    : >"$work/$name.raw"
    timeout 180 "$kvmm" --config-file "$work/move.json" --api-sock "$work/api.sock" </dev/null \
        >"$work/$name.raw" 2>"$work/$name.err" &
    kvmm_pid=$!
    echo "(no request sent)" >"$work/move-api.out"
    patch_b="{\"drive_id\": \"data\", \"path_on_host\": \"$work/move-b.img\"}"
    if wait_console '^BLK-MOVE-READY' 150 &&
        "$tool" api "$work/api.sock" PATCH /drives/data "$patch_b" >"$work/move-api.out" 2>&1 &&
        wait_console '^BLK-MOVE-VERIFIED' 120; then
        truncate -s 48M "$work/move-b.img"
        "$tool" api "$work/api.sock" PATCH /drives/data "$patch_b" >>"$work/move-api.out" 2>&1
    fi
    finish_boot
    if [ "$(grep -c '^api: HTTP/1.1 204' "$work/move-api.out")" -eq 2 ]; then
        expect virtio-blk-move '^sectors=32768$' '^moved_sectors=65536$' '^verify: ok=8MiB' '^grown_sectors=98304$'
    else
        result virtio-blk-move FAIL "PATCH /drives/data: $(cat "$work/move-api.out"); status $status," \
            "console: $(tail -n 5 "$work/$name.out" | tr '\n' ' ')"
    fi
    rm -f "$work/move-a.img" "$work/move-b.img"
fi

echo "linux tier: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

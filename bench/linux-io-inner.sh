#!/bin/sh
# Inner half of linux_io_bench.sh, run where /dev/kvm boots Linux (the test host's L1): boots
# the Debian guest (tools/guest) alternately under kvmm and QEMU microvm with one virtio-blk
# disk (a raw image in this host's RAM-backed file system) and one virtio-net interface on a
# TAP, both on virtio-mmio. In each boot the guest (kvmm-guest-tool) reads the disk with
# O_DIRECT, sequentially in 1 MiB blocks and at random 4 KiB offsets, then sends TCP data to
# this host, where kvmm-guest-tool tcp-sink times it.
# Prints "IO <vmm> <seq_MBps> <random_iops> <net_MBps>" per boot.
# Usage: linux-io-inner.sh KVMM GUEST_DIR RUNS DISK_MIB NET_MIB
kvmm=$1
guest=$2
runs=$3
disk_mib=$4
net_mib=$5
random_mib=16 # random reads: one 4 KiB read per 4 KiB of this area, in a shuffled order
tool=$guest/kvmm-guest-tool
work=${TMPDIR:-/tmp}/kvmm-io-bench
tap=kvmmbench0
mkdir -p "$work"
disk=$work/disk.img
dd if=/dev/zero of="$disk" bs=1M count="$disk_mib" 2>/dev/null || exit 1
ip link delete "$tap" 2>/dev/null
{ tunctl -t "$tap" || ip tuntap add dev "$tap" mode tap; } >/dev/null 2>&1 && ip addr add 10.0.3.1/24 dev "$tap" && ip link set "$tap" up || {
    echo "IO-FAILED cannot create TAP $tap"
    exit 1
}
command="ip link set lo up; ip addr add 10.0.3.15/24 dev eth0 && ip link set eth0 up &&
    kvmm-guest-tool read-bench /dev/vda $disk_mib 1024 seq &&
    kvmm-guest-tool read-bench /dev/vda $random_mib 4 random &&
    kvmm-guest-tool tcp-send 10.0.3.1 5000 $net_mib"
cmdline="$(cat "$guest/cmdline") quiet kvmm.run=$(printf '%s' "$command" | base64 -w0)"

# measure NAME COMMAND...: one boot; prints "IO NAME seq_MBps random_iops net_MBps".
measure() {
    name=$1
    shift
    out=$work/$name.out
    "$tool" tcp-sink 5000 >"$work/sink.out" 2>&1 &
    sink=$!
    "$@" </dev/null >"$out" 2>&1
    kill "$sink" 2>/dev/null
    wait "$sink"
    tr -d '\r' <"$out" >"$out.txt"
    if ! grep -q "KVMM-GUEST-EXIT 0" "$out.txt" || ! grep -q "^tcp-sink: received=" "$work/sink.out"; then
        echo "IO-FAILED $name"
        tail -n 20 "$out.txt"
        return 1
    fi
    seq=$(sed -n 's/^read-bench: pattern=seq .*MBps=\([0-9.]*\).*/\1/p' "$out.txt")
    iops=$(sed -n 's/^read-bench: pattern=random .*iops=\([0-9]*\).*/\1/p' "$out.txt")
    net=$(sed -n 's/.*MBps=//p' "$work/sink.out")
    echo "IO $name $seq $iops $net"
}

for run in $(seq 1 "$runs"); do
    measure kvmm timeout 300 "$kvmm" --kernel "$guest/bzImage" --initrd "$guest/initrd.cpio.gz" \
        --cmdline "$cmdline" --cpus 1 --memory 256M --console stdio \
        --disk "path=$disk" --net "tap=$tap,mac=52:54:00:12:34:57" || exit 1
    measure qemu timeout 300 qemu-system-x86_64 -M microvm,x-option-roms=off,rtc=on,isa-serial=on \
        -accel kvm -cpu host -m 256M -smp 1 -nodefaults -no-user-config -display none \
        -no-reboot -serial stdio -kernel "$guest/bzImage" -initrd "$guest/initrd.cpio.gz" \
        -append "$cmdline" \
        -drive "id=d0,file=$disk,format=raw,if=none" -device virtio-blk-device,drive=d0 \
        -netdev "tap,id=n0,ifname=$tap,script=no,downscript=no" \
        -device virtio-net-device,netdev=n0,mac=52:54:00:12:34:58 || exit 1
done
ip link delete "$tap" 2>/dev/null

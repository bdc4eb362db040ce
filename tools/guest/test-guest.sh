#!/bin/bash
# Checks the guest assets of build-guest.sh without any /dev/kvm: static checks of the
# outputs, then boots of the guest under QEMU TCG that exercise the /init protocol.
#
# Usage: tools/guest/test-guest.sh [OUTDIR]   (default $KVMM_CACHE_DIR/guest)
# Prints one line per check and "N passed, N failed"; exit status 1 if any failed.
set -uo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly SCRIPT_DIR
REPO_DIR=$(cd "$SCRIPT_DIR/../.." && pwd)
readonly REPO_DIR
readonly OUTDIR=${1:-${KVMM_CACHE_DIR:-$REPO_DIR/build/guest-cache}/guest}

passed=0
failed=0
check() {
    local name=$1
    shift
    if "$@"; then
        echo "PASS $name"
        passed=$((passed + 1))
    else
        echo "FAIL $name"
        failed=$((failed + 1))
    fi
}

"$SCRIPT_DIR/build-guest.sh" "$OUTDIR" || { echo "FAIL build-guest.sh"; echo "0 passed, 1 failed"; exit 1; }

vmlinux_is_elf64() { [[ $(head -c 5 "$OUTDIR/vmlinux" | od -An -tx1 | tr -d ' \n') == 7f454c4602 ]]; }
pvh_entry_found() { [[ $(cat "$OUTDIR/pvh-entry") =~ ^0x[0-9a-f]{8}$ ]]; }
initrd_has() { gzip -dc "$OUTDIR/initrd.cpio.gz" | cpio -t --quiet 2>/dev/null | grep -x "$1" >/dev/null; }
# Every module in /etc/kvmm/modules must come after the modules it depends on.
modules_in_dependency_order() {
    local tree list
    tree=$(mktemp -d) || return 1
    (cd "$tree" && gzip -dc "$OUTDIR/initrd.cpio.gz" | cpio -id --quiet 2>/dev/null)
    list=$tree/etc/kvmm/modules
    local release
    release=$(sed -n 's/^kernel_release=//p' "$OUTDIR/manifest")
    local ok=0 seen=" " module dependency name
    while read -r module; do
        for dependency in $(strings "$tree/lib/modules/$release/$module" |
                sed -n 's/^depends=//p' | tr ',' ' '); do
            [[ $seen == *" ${dependency//-/_} "* ]] || { echo "  $module before $dependency"; ok=1; }
        done
        name=$(basename "$module" .ko)
        seen+="${name//-/_} "
    done < "$list"
    [[ -s $list ]] || ok=1
    rm -rf "$tree"
    return $ok
}
rootfs_is_clean_ext4() { e2fsck -fn "$OUTDIR/rootfs.ext4" >/dev/null 2>&1; }
rootfs_has_init() { debugfs -R 'stat /init' "$OUTDIR/rootfs.ext4" 2>/dev/null | grep -q 'Type: regular'; }

check vmlinux_is_elf64 vmlinux_is_elf64
check pvh_entry_found pvh_entry_found
check initrd_has_init initrd_has init
check initrd_has_busybox initrd_has bin/busybox
check initrd_modules_in_dependency_order modules_in_dependency_order
check rootfs_is_clean_ext4 rootfs_is_clean_ext4
check rootfs_has_init rootfs_has_init
# The helper must run without shared libraries (the initramfs has none): no PT_INTERP.
guest_tool_is_static() { ! readelf -l "$OUTDIR/kvmm-guest-tool" 2>/dev/null | grep -q INTERP; }
rootfs_has_guest_tool() { debugfs -R 'stat /bin/kvmm-guest-tool' "$OUTDIR/rootfs.ext4" 2>/dev/null | grep -q 'Type: regular'; }
check guest_tool_is_static guest_tool_is_static
check initrd_has_guest_tool initrd_has bin/kvmm-guest-tool
check rootfs_has_guest_tool rootfs_has_guest_tool

# Boots the guest under TCG with kvmm.run=$1 (raw, already encoded); console to $2; $3 is
# added to the kernel command line, further arguments to QEMU's.
boot_guest() {
    local run=$1 output=$2 extra_cmdline=${3:-}
    shift 2
    [[ $# -gt 0 ]] && shift
    local host_mhz tsc_khz
    host_mhz=$(awk -F': *' '/^cpu MHz/ { print $2; exit }' /proc/cpuinfo)
    tsc_khz=$(awk -v m="${host_mhz:-2000}" 'BEGIN { printf "%d", m * 1000 }')
    timeout 120 qemu-system-x86_64 \
        -M microvm,x-option-roms=off,rtc=on,isa-serial=on,pit=on,pic=on \
        -accel tcg -cpu max -m 256M -nodefaults -no-user-config -display none \
        -no-reboot -serial stdio -kernel "$OUTDIR/bzImage" -initrd "$OUTDIR/initrd.cpio.gz" \
        -append "$(cat "$OUTDIR/cmdline") quiet tsc_early_khz=$tsc_khz $extra_cmdline kvmm.run=$run" "$@" \
        < /dev/null 2>&1 | tr -d '\r' > "$output"
}
console=$(mktemp)
disk=$(mktemp)
trap 'rm -f "$console" "$disk"' EXIT
if command -v qemu-system-x86_64 >/dev/null; then
    nonce="nonce-$RANDOM$RANDOM"
    # Quotes, a pipe and a newline must survive the encoding.
    boot_guest "$(printf 'echo "%s" | tr a-z A-Z\nexit 3' "$nonce" | base64 -w0)" "$console"
    check guest_prints_ready_marker grep -q '^KVMM-GUEST-READY uptime=[0-9.]*$' "$console"
    check guest_runs_command grep -qx "${nonce^^}" "$console"
    check guest_reports_exit_status grep -qx 'KVMM-GUEST-EXIT 3' "$console"
    boot_guest 'not*base64' "$console"
    check guest_rejects_invalid_encoding grep -qx 'KVMM-GUEST-EXIT 127' "$console"
    # root= on the command line: /init mounts the disk and switches to it (a copy of
    # rootfs.ext4 on virtio-blk), where the helper runs from the ext4 root.
    cp "$OUTDIR/rootfs.ext4" "$disk"
    boot_guest "$(printf '%s' 'awk "\$2 == \"/\" { print \"root=\" \$1 \" \" \$3 }" /proc/mounts
        kvmm-guest-tool fill /root/data 2 5 && kvmm-guest-tool verify /root/data 2 5' | base64 -w0)" "$console" \
        "root=/dev/vda rw" -drive "id=root,file=$disk,format=raw,if=none" -device virtio-blk-device,drive=root
    check guest_switches_to_disk_root grep -qx 'root=/dev/vda ext4' "$console"
    check guest_tool_runs grep -qx 'verify: ok=2MiB seed=5' "$console"
else
    echo "SKIP guest boots: qemu-system-x86_64 not installed"
fi

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]

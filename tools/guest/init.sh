#!/bin/sh
# /init of the kvmm Linux test guest (busybox sh, PID 1).
#
# Mounts the kernel file systems, loads the virtio modules listed in
# /etc/kvmm/modules (one path per line, already in dependency order), prints the
# readiness marker, then either runs the command passed as kvmm.run=<base64> on
# the kernel command line or starts an interactive shell on the console.
#
# Console protocol (parsed by tests, keep stable):
#   KVMM-GUEST-READY uptime=<seconds since boot, from /proc/uptime>
#   ...output of the command...
#   KVMM-GUEST-EXIT <exit status of the command>
# kvmm.run is standard base64 (RFC 4648 section 4, no line breaks): its alphabet has
# no blank or quote, so the kernel passes it through untouched. The kernel ignores
# the parameter itself because its name contains a dot (it is taken for a parameter
# of a module "kvmm" that does not exist) and it does not reach init's argv or
# environment, so it is read from /proc/cmdline.
#
# Root file system on a disk: with root=DEVICE on the command line (kvmm adds
# "root=/dev/vda ro|rw" for a --disk with root=on), the kernel still runs this /init from
# the initramfs (Documentation/filesystems/ramfs-rootfs-initramfs.rst: an initramfs with
# /init wins over root=), so /init itself mounts DEVICE (ext4, ro or rw as the command
# line says) and hands over with switch_root to DEVICE's /init - this same script, built
# into rootfs.ext4 - which then skips the modules (already loaded) and the switch.

export PATH=/bin:/sbin:/usr/bin:/usr/sbin
export HOME=/root
umask 022

mount -t devtmpfs devtmpfs /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mkdir -p /dev/pts /dev/shm /tmp /run
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
hostname kvmm-guest

if [ -z "${KVMM_SWITCHED_ROOT:-}" ] && [ -r /etc/kvmm/modules ]; then
    while read -r module; do
        [ -n "$module" ] || continue
        insmod "/lib/modules/$(uname -r)/$module" ||
            echo "kvmm-init: insmod $module failed" >&2
    done < /etc/kvmm/modules
fi

power_off() {
    sync
    poweroff -f
    # Without an ACPI power-off method the kernel returns here; exiting PID 1
    # then panics, and panic=-1 reboot=k resets the machine through the i8042.
    reboot -f
    exit 1
}

root_device=
root_mode=rw
for word in $(cat /proc/cmdline); do
    case "$word" in
        root=*) root_device=${word#root=} ;;
        ro | rw) root_mode=$word ;;
    esac
done
if [ -n "$root_device" ] && [ -z "${KVMM_SWITCHED_ROOT:-}" ]; then
    mkdir -p /newroot
    if mount -t ext4 -o "$root_mode" "$root_device" /newroot; then
        # The new /init mounts the kernel file systems again; switch_root needs / to hold
        # nothing but the new root's mount.
        umount /dev/pts /dev/shm /dev /tmp /run /sys /proc
        export KVMM_SWITCHED_ROOT=1
        exec switch_root /newroot /init
    fi
    echo "kvmm-init: cannot mount root=$root_device ($root_mode); staying in the initramfs" >&2
fi

read -r uptime_seconds _ < /proc/uptime
echo "KVMM-GUEST-READY uptime=$uptime_seconds"

encoded=
for word in $(cat /proc/cmdline); do
    case "$word" in
        kvmm.run=*) encoded=${word#kvmm.run=} ;;
    esac
done

if [ -n "$encoded" ]; then
    if command=$(echo "$encoded" | base64 -d 2>/dev/null) && [ -n "$command" ]; then
        sh -c "$command" < /dev/console > /dev/console 2>&1
        status=$?
    else
        echo "kvmm-init: kvmm.run is not valid base64: $encoded" >&2
        status=127
    fi
    echo "KVMM-GUEST-EXIT $status"
    power_off
fi

# No command: interactive shell with the console as its controlling terminal.
setsid cttyhack sh
power_off

#!/bin/sh
# /init of the test host (L1): a Linux VM under QEMU TCG whose emulated AMD CPU has
# SVM with nested paging, so kvm_amd gives it a working /dev/kvm for L2 guests.
#
# Loads the modules in /etc/testhost/modules (dependency order), runs
# /testhost/command.sh (written by run-in-testhost.sh) and reports on the console:
#   TESTHOST-READY uptime=<seconds since L1 boot when /init started the command>
#   TESTHOST-EXIT <exit status of the command>
# then powers off. run-in-testhost.sh parses these lines; keep them stable.

export PATH=/bin:/sbin:/usr/bin:/usr/sbin
export HOME=/root
umask 022

mount -t devtmpfs devtmpfs /dev
exec < /dev/console > /dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mkdir -p /dev/pts /dev/shm /tmp /run /root
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
hostname kvmm-testhost
ip link set lo up 2>/dev/null

while read -r module; do
    [ -n "$module" ] || continue
    insmod "/lib/modules/$(uname -r)/$module" ||
        echo "testhost: insmod $module failed"
done < /etc/testhost/modules
[ -c /dev/kvm ] || echo "testhost: warning: no /dev/kvm in L1 (kvm_amd did not load)"

read -r uptime_seconds _ < /proc/uptime
echo "TESTHOST-READY uptime=$uptime_seconds"

if [ -r /testhost/command.sh ]; then
    sh /testhost/command.sh < /dev/null
    status=$?
else
    echo "testhost: no /testhost/command.sh in the initramfs"
    status=127
fi
echo "TESTHOST-EXIT $status"

sync
poweroff -f
# Without an ACPI power-off method: exiting PID 1 panics, panic=-1 resets, and
# QEMU runs with -no-reboot, so it exits either way.
exit "$status"

#!/bin/sh
# Smoke test of the test host, run inside L1 by:
#   tools/testhost/run-in-testhost.sh --with-qemu --share tools/testhost -- tools/testhost/smoke-test.sh
# Checks that L1 has a working /dev/kvm with SVM nested paging, then boots the guest
# of tools/guest as an L2 VM with QEMU on KVM and checks its console protocol
# (KVMM-GUEST-READY, the command's output, KVMM-GUEST-EXIT 0). Exit 0 on success.
set -u
guest=${KVMM_GUEST_DIR:-/guest}

seconds() { cut -d' ' -f1 /proc/uptime; }

[ -c /dev/kvm ] || { echo "smoke: FAIL no /dev/kvm in L1"; exit 1; }
echo "smoke: /dev/kvm present"
dmesg | grep -i -E 'kvm|svm|npt'
dmesg | grep -q 'Nested Paging enabled' || echo "smoke: note: no 'Nested Paging enabled' in dmesg"

command -v qemu-system-x86_64 >/dev/null || { echo "smoke: FAIL no qemu-system-x86_64 (use --with-qemu)"; exit 1; }
nonce=smoke-$$-$(seconds)
run=$(printf 'echo hello from L2 %s; uname -r' "$nonce" | base64 -w0)
log=/tmp/l2-console.log
start=$(seconds)
# -M microvm with the CMOS RTC (without it the kernel's RTC probe stalls ~3.5 s)
# and the 16550 console; QEMU's microvm ACPI (GED) makes poweroff end QEMU.
timeout 180 qemu-system-x86_64 \
    -M microvm,x-option-roms=off,rtc=on,isa-serial=on \
    -accel kvm -cpu host -m 256M -smp 1 \
    -nodefaults -no-user-config -display none -no-reboot -serial stdio \
    -kernel "$guest/bzImage" -initrd "$guest/initrd.cpio.gz" \
    -append "$(cat "$guest/cmdline") kvmm.run=$run" < /dev/null > "$log" 2>&1
qemu_status=$?
end=$(seconds)
tr -d '\r' < "$log" | tail -n 15
ready=$(tr -d '\r' < "$log" | sed -n 's/^KVMM-GUEST-READY uptime=//p')

failed=0
[ "$qemu_status" -eq 0 ] || { echo "smoke: FAIL L2 QEMU exited with $qemu_status"; failed=1; }
[ -n "$ready" ] || { echo "smoke: FAIL no KVMM-GUEST-READY line from L2"; failed=1; }
tr -d '\r' < "$log" | grep -q "^hello from L2 $nonce\$" ||
    { echo "smoke: FAIL the L2 command's output is missing"; failed=1; }
tr -d '\r' < "$log" | grep -q '^KVMM-GUEST-EXIT 0$' ||
    { echo "smoke: FAIL no 'KVMM-GUEST-EXIT 0' from L2"; failed=1; }
echo "smoke: L2 kernel reached /init at ${ready:-?} s of its uptime; L2 QEMU run took $(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.2f", e - s }') s"
[ "$failed" -eq 0 ] && echo "smoke: PASS"
exit "$failed"

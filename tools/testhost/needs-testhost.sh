#!/bin/bash
# Tells whether Linux guests must run inside the test host (tools/testhost).
#
# Exit status 0: this host's /dev/kvm cannot boot Linux guests, because /dev/kvm is
#                missing or not usable, or the CPU flags in /proc/cpuinfo have neither
#                vmx (Intel VT-x) nor svm (AMD-V): then KVM can only emulate guest
#                kernel code instruction by instruction (see docs DESIGN, "This
#                workplace's /dev/kvm").
# Exit status 1: hardware virtualisation and /dev/kvm are present; run Linux guests
#                directly.
# The reason is printed on stdout.
set -u

if [[ ! -c /dev/kvm ]]; then
    echo "needs testhost: /dev/kvm does not exist"
    exit 0
fi
if [[ ! -r /dev/kvm || ! -w /dev/kvm ]]; then
    echo "needs testhost: /dev/kvm is not readable and writable by this user"
    exit 0
fi
if ! grep -q -w -E 'vmx|svm' /proc/cpuinfo; then
    echo "needs testhost: the CPU has no vmx or svm flag (no hardware virtualisation)"
    exit 0
fi
echo "no testhost needed: /dev/kvm with hardware virtualisation"
exit 1

#!/usr/bin/env python3
"""Which rows of kvmm's seccomp table (src/sandbox/seccomp_table.cc) a test run exercised.

Development aid, not a test: strace is not a dependency of kvmm. Run tests under
`strace -f -ff -qq -o DIR/t <test binary>` (one file per thread), then

    tools/seccomp_coverage.py DIR [DIR...]

For every kvmm thread, the calls after its seccomp(SECCOMP_SET_MODE_FILTER) are attributed to
its role: the thread's name (PR_SET_NAME: vcpuN, api, config_boot) or, for the main thread,
vmm. A row counts as exercised for a role when that role made the call (for ioctl rows, a
request of the row's group, by strace's decoded name). Prints every row with the roles that
exercised it, then how many rows nothing exercised.
"""
import collections
import glob
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLE = os.path.join(ROOT, "src/sandbox/seccomp_table.cc")
ROLE_BITS = {"ROLE_VMM": {"vmm"}, "ROLE_VCPU": {"vcpu"}, "ROLE_API": {"api"}, "ROLE_CONFIG_BOOT": {"config_boot"},
             "ROLE_ALL": {"vmm", "vcpu", "api", "config_boot"}, "ROLE_CONTROL": {"api", "config_boot"},
             "ROLE_FILES": {"vmm", "api", "config_boot"}, "ROLE_EVENT_LOOPS": {"vmm", "api"}}
IOCTL_GROUPS = {
    "KvmVcpuRun": {"KVM_RUN"},
    "KvmVcpuDiagnostics": {"KVM_GET_REGS", "KVM_GET_SREGS"},
    "KvmInterruptLine": {"KVM_IRQ_LINE"},
    "KvmDeviceWiring": {"KVM_IOEVENTFD", "KVM_IRQFD"},
    "KvmSaveState": {"KVM_GET_REGS", "KVM_GET_SREGS", "KVM_GET_MSRS", "KVM_GET_FPU", "KVM_GET_XSAVE", "KVM_GET_XSAVE2",
                     "KVM_GET_XCRS", "KVM_GET_LAPIC", "KVM_GET_MP_STATE", "KVM_GET_VCPU_EVENTS", "KVM_GET_DEBUGREGS",
                     "KVM_GET_CPUID2", "KVM_GET_MSR_INDEX_LIST", "KVM_CHECK_EXTENSION", "KVM_GET_IRQCHIP",
                     "KVM_GET_PIT2", "KVM_GET_CLOCK"},
    "KvmDirtyLog": {"KVM_GET_DIRTY_LOG"},
    "Terminal": {"TCGETS", "TCSETS", "TCSETSW", "TCSETSF", "TIOCGWINSZ"},
    "BlockDevice": {"BLKGETSIZE64", "BLKDISCARD", "BLKSSZGET"},
    "Tap": {"TUNSETOFFLOAD", "TUNSETVNETHDRSZ"},
    "SocketQueue": {"FIONREAD"},
}
CALL = re.compile(r"^([a-z_0-9]+)\((.*)")


def table_rows():
    text = open(TABLE, encoding="utf-8").read()
    rows = []
    for match in re.finditer(r'\{\s*"([a-z_0-9]+)",\s*([A-Z_| ]+),\s*([a-z_]+\([^)]*\))', text):
        syscall, roles, condition = match.groups()
        role_set = set()
        for bit in roles.split("|"):
            role_set |= ROLE_BITS[bit.strip()]
        rows.append((syscall, role_set, condition))
    return rows


def thread_calls(directories):
    """Counter of (role, syscall, ioctl request name or first argument) of every filtered call."""
    calls = collections.Counter()
    for directory in directories:
        for path in glob.glob(os.path.join(directory, "t.*")):
            name = "vmm"
            filtered = False
            for line in open(path, errors="replace"):
                match = CALL.match(line)
                if not match:
                    continue
                syscall, rest = match.groups()
                if syscall == "prctl" and "PR_SET_NAME" in rest:
                    thread = re.search(r'"([^"]*)"', rest)
                    if thread:
                        value = thread.group(1)
                        name = "vcpu" if value.startswith("vcpu") else value
                if syscall == "seccomp" and "SECCOMP_SET_MODE_FILTER" in rest and "= 0" in line and not filtered:
                    filtered = True
                    continue
                if filtered:
                    argument = ""
                    parts = [part.strip() for part in rest.split(",")]
                    if syscall == "ioctl" and len(parts) > 1:
                        argument = parts[1].split(" ")[0].rstrip(")")
                    elif syscall in ("socket", "prctl", "seccomp") and parts:
                        argument = parts[0]
                    calls[(name, syscall, argument)] += 1
    return calls


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    rows = table_rows()
    calls = thread_calls(sys.argv[1:])
    unexercised = 0
    print(f"{'syscall':18} {'condition':34} {'allowed for':32} exercised by")
    for syscall, role_set, condition in rows:
        group = re.search(r"IoctlGroup::(\w+)", condition)
        exercised = set()
        for role, name, argument in calls:
            if role not in role_set or name != syscall:
                continue
            if group and argument not in IOCTL_GROUPS[group.group(1)]:
                continue
            if condition.startswith("one_of(0, AF_") and argument != condition.split(",")[1].strip(" )"):
                continue
            exercised.add(role)
        print(f"{syscall:18} {condition[:34]:34} {','.join(sorted(role_set)):32} {','.join(sorted(exercised)) or '-'}")
        unexercised += not exercised
    print(f"\n{len(rows) - unexercised} of {len(rows)} rows exercised by at least one role")
    allowed = {(role, syscall) for syscall, role_set, _ in rows for role in role_set}
    outside = sorted({(role, name) for role, name, _ in calls} - allowed)
    if outside:
        print("filtered calls no row allows (each should have trapped):", outside)


if __name__ == "__main__":
    main()

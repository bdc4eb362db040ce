#!/usr/bin/env python3
"""Where a running kvmm's resident memory goes: /proc/PID/smaps grouped by what each mapping is.

Starts kvmm on the freestanding test guest with "test=idle" (the guest prints one line and halts
for ever, so kvmm stays up), waits for that line, reads /proc/PID/smaps and prints, per object,
the resident KiB, of which private dirty (heap, stacks, relocated data) and clean (file pages
shared with the page cache). Anonymous mappings are named where the process says what they are:
the stack of each thread (the mapping that holds the thread's stack pointer, from
/proc/PID/task/TID/syscall, which needs ptrace access: root or the same user), and the guest's
RAM (the one anonymous mapping of exactly --memory bytes; what is resident there was written by
the boot loader or touched by the guest, not by kvmm's own code). Then kvmm is killed by its pid.
A binary linked moments ago shows its file pages as private dirty until the page cache writes
them back; the resident total is the figure that matters.

Usage: python3 bench/memory_breakdown.py [--kvmm PATH] [--build-dir build/release] [--memory 64M]
                                         [--mappings] [-- EXTRA KVMM FLAGS]
"""
import argparse
import collections
import os
import re
import select
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAPPING = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$")


def memory_bytes(text):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if text[-1:].upper() in units:
        return int(text[:-1]) * units[text[-1:].upper()]
    return int(text) << 20  # kvmm's plain numbers are MiB


def thread_stack_pointers(pid):
    """{stack pointer: thread name} for the threads whose /proc syscall file can be read."""
    result = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm", encoding="utf-8") as comm:
                name = comm.read().strip()
            with open(f"/proc/{pid}/task/{tid}/syscall", encoding="ascii") as syscall:
                fields = syscall.read().split()
        except OSError:
            continue
        if len(fields) >= 3:  # "NR args... SP PC"; "running" has no stack pointer
            result[int(fields[-2], 16)] = name
    return result


def read_mappings(pid, guest_ram_size):
    """[(start, permissions, size, name, {field: KiB})] from /proc/PID/smaps."""
    stacks = thread_stack_pointers(pid)
    mappings = []
    with open(f"/proc/{pid}/smaps", encoding="utf-8") as smaps:
        for line in smaps:
            match = MAPPING.match(line)
            if match:
                start, end = int(match[1], 16), int(match[2], 16)
                name = match[4] or "[anonymous]"
                for pointer, thread in stacks.items():
                    if start <= pointer < end:
                        name = f"[stack of thread {thread}]"
                if name == "[anonymous]" and end - start == guest_ram_size:
                    name = "[guest RAM]"
                mappings.append((start, match[3], end - start, name, collections.Counter()))
            elif mappings and line.split(":")[0] in ("Rss", "Private_Dirty", "Private_Clean", "Shared_Clean"):
                field, value = line.split(":")
                mappings[-1][4][field] += int(value.split()[0])
    return mappings


def wait_for_line(process, timeout):
    deadline = time.monotonic() + timeout
    output = b""
    while b"\n" not in output:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no guest serial line within {timeout} s; stdout {output[-200:]!r}")
        ready, _, _ = select.select([process.stdout], [], [], 0.05)
        if ready:
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"kvmm exited (status {process.wait()}) before the guest's first line")
            output += chunk


def print_report(pid, mappings, show_mappings):
    if show_mappings:
        print(f"{'start':>14} {'perm':4} {'size KiB':>9} {'rss':>6} {'dirty':>6}  mapping")
        for start, permissions, size, name, fields in mappings:
            print(f"{start:14x} {permissions:4} {size >> 10:9} {fields['Rss']:6} {fields['Private_Dirty']:6}  {name}")
        print()
    totals = collections.defaultdict(collections.Counter)
    for _, _, _, name, fields in mappings:
        totals[os.path.basename(name) if name.startswith("/") else name].update(fields)
    print(f"{'resident KiB':>12} {'private dirty':>13} {'clean':>6}  object")
    for name, fields in sorted(totals.items(), key=lambda item: -item[1]["Rss"]):
        if fields["Rss"]:
            clean = fields["Private_Clean"] + fields["Shared_Clean"]
            print(f"{fields['Rss']:12} {fields['Private_Dirty']:13} {clean:6}  {name}")
    total = sum(fields["Rss"] for fields in totals.values())
    guest = totals["[guest RAM]"]["Rss"]
    print(f"{total:12} {'':13} {'':6}  total ({total - guest} KiB without the guest's RAM)")
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        print(", ".join(" ".join(line.split()) for line in status
                        if line.startswith(("VmHWM", "VmRSS", "RssAnon", "RssFile", "Threads"))))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build-dir", default=os.path.join(ROOT, "build/release"))
    parser.add_argument("--kvmm", help="kvmm binary (default BUILD_DIR/src/cli/kvmm)")
    parser.add_argument("--guest", help="test guest ELF (default BUILD_DIR/tests/guests/kvmm-test-guest.elf)")
    parser.add_argument("--memory", default="64M", help="guest memory (default 64M)")
    parser.add_argument("--settle", type=float, default=0.2, help="seconds to wait after the first line")
    parser.add_argument("--mappings", action="store_true", help="also print every mapping")
    parser.add_argument("extra", nargs="*", help="more kvmm flags (after --)")
    arguments = parser.parse_args()
    kvmm = arguments.kvmm or os.path.join(arguments.build_dir, "src/cli/kvmm")
    guest = arguments.guest or os.path.join(arguments.build_dir, "tests/guests/kvmm-test-guest.elf")
    for path in (kvmm, guest):
        if not os.path.isfile(path):
            sys.exit(f"memory_breakdown: {path} is missing: build the release preset")
    command = [kvmm, "--kernel", guest, "--cmdline", "test=idle", "--memory", arguments.memory, "--cpus", "1",
               "--console", "stdio"] + arguments.extra
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    try:
        wait_for_line(process, 30)
        time.sleep(arguments.settle)
        print_report(process.pid, read_mappings(process.pid, memory_bytes(arguments.memory)), arguments.mappings)
    except (RuntimeError, OSError) as error:
        sys.exit(f"memory_breakdown: {error}")
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait()
        process.stdout.close()


if __name__ == "__main__":
    main()

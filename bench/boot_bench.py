#!/usr/bin/env python3
"""Start-up benchmark: kvmm against QEMU (microvm machine) on the same tiny PVH guest.

Each run starts the VMM with the freestanding test guest (command line "test=hello",
1 vCPU, 64 MiB by default) and measures:
  - start-up: wall time from just before exec to the arrival of the guest's first serial
    line ("kvmm-test-guest: hello") on the VMM's stdout pipe;
  - VmHWM: the process's peak resident set size read from /proc/PID/status at that moment
    (the same instant for both VMMs, so the comparison is fair);
  - ru_maxrss: the peak RSS the kernel reports when the process is reaped (os.wait4).
    Linux keeps the larger of the pre-exec and post-exec peaks, and a child forked from this
    Python process starts with Python's RSS, so ru_maxrss has a floor of about that size; the
    floor is measured (with /bin/true) and printed beside it. VmHWM has no such floor and is
    the figure to compare.
kvmm powers off by itself when the guest writes its power-off port; QEMU's microvm machine
has no such port, so QEMU is killed (by its pid) as soon as the line has been read.
Runs of the two programs alternate so that noise on the host hits both alike, and one
unmeasured warm-up run of each comes first (page cache, KVM module state).

This is a benchmark, not a test: it prints numbers and fails only when a run fails.
With --versus-no-seccomp the comparison is kvmm against itself run with --no-seccomp instead
of QEMU: the start-up cost of compiling and installing the seccomp filters (docs/security.md).
With --baseline-kvmm PATH a second kvmm binary (e.g. one built from an earlier commit) takes
part in the same alternation as "kvmm-base", so a change is measured before and after under the
same host noise; its ratio to the peer is printed beside kvmm's.

Usage: python3 bench/boot_bench.py [--runs N] [--json] [--build-dir build/release] [--versus-no-seccomp]
                                   [--baseline-kvmm PATH]
"""
import argparse
import json
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIRST_LINE = b"kvmm-test-guest: hello"
GUEST_CMDLINE = "test=hello"


class BenchError(Exception):
    pass


def vm_hwm_kib(pid):
    """Peak RSS so far of a live process, in KiB, or None if /proc no longer has it."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reap(process, deadline):
    """Reaps the process with os.wait4, killing it at the deadline; returns (exit code, ru_maxrss KiB).

    The stdout pipe is drained meanwhile so that a VMM still writing its console cannot block
    on a full pipe. Popen.poll/wait are not used: they would reap the child without its rusage.
    """
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid == process.pid:
            break
        if time.monotonic() >= deadline:
            os.kill(process.pid, signal.SIGKILL)
            _, status, usage = os.wait4(process.pid, 0)
            break
        ready, _, _ = select.select([process.stdout], [], [], 0.001)
        if ready:
            os.read(process.stdout.fileno(), 65536)
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here: keep Popen from waiting again
    return process.returncode, usage.ru_maxrss


def run_once(name, command, exits_by_itself, timeout):
    """One start-up of one VMM; returns {"start_ms", "vm_hwm_kib", "ru_maxrss_kib"}."""
    with tempfile.TemporaryFile() as stderr:
        start = time.monotonic()
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr)
        deadline = start + timeout
        output = b""
        start_ms = None
        hwm = None
        try:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([process.stdout], [], [], 0.05)
                if not ready:
                    continue
                chunk = os.read(process.stdout.fileno(), 4096)
                if not chunk:
                    break  # the VMM closed stdout (exited) before the line came
                output += chunk
                if b"\n" in output:
                    start_ms = (time.monotonic() - start) * 1000.0
                    hwm = vm_hwm_kib(process.pid)
                    break
        finally:
            if start_ms is None or not exits_by_itself:
                try:
                    os.kill(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            exit_code, maxrss = reap(process, deadline)
            process.stdout.close()
        stderr.seek(0)
        error_text = stderr.read()[-500:].decode(errors="replace").strip()

    first_line = output.split(b"\n", 1)[0].rstrip(b"\r")
    if start_ms is None:
        raise BenchError(f"{name}: no guest serial line within {timeout} s (exit code {exit_code}); "
                         f"stdout {output[-200:]!r}; stderr: {error_text}")
    if first_line != FIRST_LINE:
        raise BenchError(f"{name}: first guest line was {first_line!r}, expected {FIRST_LINE!r}")
    if exits_by_itself and exit_code != 0:
        raise BenchError(f"{name}: exited with status {exit_code} after the guest's power-off; stderr: {error_text}")
    return {"start_ms": start_ms, "vm_hwm_kib": hwm, "ru_maxrss_kib": maxrss}


def launcher_floor_kib():
    """ru_maxrss of a trivial program started the same way: the floor that fork() puts under ru_maxrss."""
    process = subprocess.Popen(["/bin/true"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    _, maxrss = reap(process, time.monotonic() + 10)
    process.stdout.close()
    return maxrss


def summarize(values):
    values = [value for value in values if value is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def ratio(result, metric, other, name="kvmm"):
    kvmm, qemu = result[name][metric], result[other][metric]
    if kvmm is None or qemu is None or qemu["median"] == 0:
        return None
    return kvmm["median"] / qemu["median"]


def parse_arguments():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="measured runs of each VMM (default 20)")
    parser.add_argument("--build-dir", default=os.path.join(ROOT, "build/release"),
                        help="CMake build directory holding kvmm and the test guest (default build/release)")
    parser.add_argument("--kvmm", help="kvmm binary (default BUILD_DIR/src/cli/kvmm)")
    parser.add_argument("--guest", help="PVH guest ELF (default BUILD_DIR/tests/guests/kvmm-test-guest.elf)")
    parser.add_argument("--qemu", default="qemu-system-x86_64", help="QEMU binary (default qemu-system-x86_64)")
    parser.add_argument("--memory", default="64M", help="guest memory for both VMMs (default 64M)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds allowed per run (default 30)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument("--versus-no-seccomp", action="store_true",
                        help="compare kvmm with kvmm --no-seccomp instead of QEMU")
    parser.add_argument("--baseline-kvmm",
                        help="another kvmm binary run in the same alternation (reported as kvmm-base)")
    arguments = parser.parse_args()
    if arguments.runs < 1:
        parser.error("--runs must be at least 1")
    arguments.kvmm = arguments.kvmm or os.path.join(arguments.build_dir, "src/cli/kvmm")
    arguments.guest = arguments.guest or os.path.join(arguments.build_dir, "tests/guests/kvmm-test-guest.elf")
    return arguments


def check_prerequisites(arguments):
    if not (os.path.isfile(arguments.kvmm) and os.access(arguments.kvmm, os.X_OK)):
        raise BenchError(f"kvmm binary {arguments.kvmm} is missing: build it with "
                         "`cmake --preset release && cmake --build --preset release`")
    if not os.path.isfile(arguments.guest):
        raise BenchError(f"test guest {arguments.guest} is missing: build the release preset "
                         "(target kvmm_test_guest)")
    if arguments.baseline_kvmm and not (os.path.isfile(arguments.baseline_kvmm)
                                        and os.access(arguments.baseline_kvmm, os.X_OK)):
        raise BenchError(f"--baseline-kvmm {arguments.baseline_kvmm} is not an executable file")
    if arguments.versus_no_seccomp:
        return
    qemu = shutil.which(arguments.qemu)
    if qemu is None:
        raise BenchError(f"QEMU binary '{arguments.qemu}' is not installed: run tools/install-deps.sh")
    arguments.qemu = qemu
    if not os.path.exists("/dev/kvm"):
        raise BenchError("/dev/kvm does not exist: the kvm module is not loaded or this host has no KVM")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        raise BenchError("/dev/kvm is not readable and writable by this user (join the kvm group or run as root)")


def print_table(result, arguments, other):
    print(f"boot_bench: {arguments.runs} alternating runs each, guest {os.path.basename(arguments.guest)} "
          f"'{GUEST_CMDLINE}', 1 vCPU, {arguments.memory}")
    rows = [("start-up to first serial line", "start_ms", "ms", 1.0, "{:.2f}"),
            ("VmHWM at first line", "vm_hwm_kib", "MiB", 1024.0, "{:.1f}"),
            ("ru_maxrss at exit", "ru_maxrss_kib", "MiB", 1024.0, "{:.1f}")]
    print(f"{'metric':32} {'program':10} {'median':>10} {'min':>10} {'max':>10}")
    names = [name for name in ("kvmm", "kvmm-base") if name in result] + [other]
    for label, metric, unit, scale, number_format in rows:
        for name in names:
            summary = result[name][metric]
            cells = ["n/a"] * 3 if summary is None else [
                f"{number_format.format(summary[key] / scale)} {unit}" for key in ("median", "min", "max")]
            print(f"{label:32} {name:10} {cells[0]:>10} {cells[1]:>10} {cells[2]:>10}")
            label = ""
        for ratio_key, name in (("ratio", "kvmm"), ("ratio_base", "kvmm-base")):
            if ratio_key not in result:
                continue
            value = result[ratio_key][metric]
            print(f"{'':32} {'ratio':10} {'n/a' if value is None else f'{value:.3f}':>10}   "
                  f"({name} / {other}, medians)")
    print(f"ru_maxrss includes a floor of {result['ru_maxrss_floor_kib'] / 1024:.1f} MiB inherited through fork() from "
          "this script (a /bin/true started the same way reports that much); compare VmHWM.")


def main():
    arguments = parse_arguments()
    check_prerequisites(arguments)
    kvmm_command = [arguments.kvmm, "--kernel", arguments.guest, "--cmdline", GUEST_CMDLINE, "--memory",
                    arguments.memory, "--cpus", "1", "--console", "stdio"]
    other = "no-seccomp" if arguments.versus_no_seccomp else "qemu"
    vmms = {
        "kvmm": (kvmm_command, True),
        "no-seccomp": (kvmm_command + ["--no-seccomp", "--log-level", "error"], True),
        "qemu": ([arguments.qemu, "-M", "microvm,x-option-roms=off,rtc=off,isa-serial=on", "-accel", "kvm",
                  "-cpu", "host,-arch-capabilities", "-m", arguments.memory, "-smp", "1", "-nodefaults",
                  "-no-user-config", "-nographic", "-serial", "stdio", "-kernel", arguments.guest, "-append",
                  GUEST_CMDLINE], False),
    }
    del vmms["qemu" if arguments.versus_no_seccomp else "no-seccomp"]
    if arguments.baseline_kvmm:
        vmms["kvmm-base"] = ([arguments.baseline_kvmm] + kvmm_command[1:], True)
    for name, (command, exits_by_itself) in vmms.items():
        run_once(name, command, exits_by_itself, arguments.timeout)
    samples = {name: [] for name in vmms}
    for _ in range(arguments.runs):
        for name, (command, exits_by_itself) in vmms.items():
            samples[name].append(run_once(name, command, exits_by_itself, arguments.timeout))

    metrics = ("start_ms", "vm_hwm_kib", "ru_maxrss_kib")
    result = {name: {metric: summarize([run[metric] for run in runs]) for metric in metrics}
              for name, runs in samples.items()}
    result["ratio"] = {metric: ratio(result, metric, other) for metric in metrics}
    if arguments.baseline_kvmm:
        result["ratio_base"] = {metric: ratio(result, metric, other, "kvmm-base") for metric in metrics}
    result["ru_maxrss_floor_kib"] = launcher_floor_kib()
    result["runs"] = arguments.runs
    result["memory"] = arguments.memory
    result["samples"] = samples
    if arguments.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result, arguments, other)


if __name__ == "__main__":
    try:
        main()
    except BenchError as error:
        sys.exit(f"boot_bench: {error}")

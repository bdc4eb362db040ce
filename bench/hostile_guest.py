#!/usr/bin/env python3
"""Hostile-guest measurements: how kvmm holds up while the test guest attacks it.

For each attack (a scenario of the freestanding test guest, tests/guests/hostile.h, plus the
serial flood with an unread stdout pipe) this starts kvmm in flag mode with --control-sock,
lets the attack run for --attack-seconds, then measures:
  - api_ms: the slowest of PATCH /vm Paused and Resumed (both run on kvmm's event loop);
  - sigterm_ms: the time from SIGTERM to kvmm's exit;
  - peak_rss_mib: VmHWM from /proc/PID/status just before SIGTERM;
  - open_fds: kvmm's open file descriptors at that moment (the vsock flood runs kvmm under
    a 1024-fd limit, as a default login session has, with a host listener that never accepts).
A request that gets no answer within --api-timeout, or a kvmm still alive --exit-timeout
after SIGTERM (it is then killed by its pid), is reported as such. Use --kvmm to measure
another build (e.g. an older one) with the same guest. This is a measurement script, not a
test: the KVM tier's hostile_guest_test asserts the bounds.

Usage: python3 bench/hostile_guest.py [--build-dir build/release] [--kvmm PATH] [--only NAME]
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> (kvmm flags besides --kernel/--control-sock, guest command line, stdout unread)
ATTACKS = {
    "rng-repost": (["--rng", "--memory", "256M", "--console", "none"], "test=hostile-rng", False),
    "reset-loop": (["--rng", "--console-device", "virtio", "--memory", "256M", "--console", "none"],
                   "test=hostile-reset", False),
    "console-huge-chains": (["--console-device", "virtio", "--memory", "256M", "--console", "none"],
                            "test=hostile-console", False),
    "blk-huge-requests-io_uring": (["--disk", "path={image},engine=io_uring", "--memory", "256M", "--console", "none"],
                                   "test=hostile-blk", False),
    "blk-huge-requests-sync": (["--disk", "path={image},engine=sync", "--memory", "256M", "--console", "none"],
                               "test=hostile-blk", False),
    "serial-flood-unread-pipe": (["--memory", "256M"], "test=serial-flood", True),
    # 1100 guest connections to a host listener that never accepts, under a 1024-fd limit.
    "vsock-connection-flood": (["--vsock", "cid=3,uds={vsock}", "--memory", "256M", "--console", "none"],
                               "test=hostile-vsock connections=1100 port=1234", False),
}
VSOCK_PORT = 1234


def http(socket_path, method, path, body, timeout):
    """One request; returns (status or None, milliseconds)."""
    started = time.monotonic()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(timeout)
            client.connect(socket_path)
            request = (f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                       f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}")
            client.sendall(request.encode())
            answer = b""
            while True:
                chunk = client.recv(4096)
                if not chunk:
                    break
                answer += chunk
        status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None
    except (OSError, ValueError):
        status = None
    return status, (time.monotonic() - started) * 1000


def peak_rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def run_attack(name, kvmm, guest, args, workdir):
    flags, cmdline, unread_stdout = ATTACKS[name]
    image = os.path.join(workdir, "sparse.img")
    with open(image, "wb") as disk:
        disk.truncate(64 << 30)  # sparse: reads are the kernel zero-filling guest memory
    socket_path = os.path.join(workdir, f"{name}.sock")
    vsock = os.path.join(workdir, "vsock.sock")
    command = [kvmm, "--kernel", guest, "--cmdline", cmdline, "--control-sock", socket_path]
    command += [flag.format(image=image, vsock=vsock) for flag in flags]
    listener = None
    if "--vsock" in flags:
        command = ["prlimit", "--nofile=1024:1024", "--"] + command
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(f"{vsock}_{VSOCK_PORT}")
        listener.listen(4096)
    # An unread stdout: a pipe whose read end this script keeps open and never reads.
    read_end, write_end = os.pipe()
    stdout = write_end if unread_stdout else subprocess.DEVNULL
    process = subprocess.Popen(command, stdout=stdout, stderr=subprocess.DEVNULL)
    os.close(write_end)
    result = {"attack": name}
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(socket_path) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(args.attack_seconds)
        api = []
        for state in ("Paused", "Resumed"):
            status, milliseconds = http(socket_path, "PATCH", "/vm", json.dumps({"state": state}), args.api_timeout)
            api.append(milliseconds if status == 204 else None)
        result["api_ms"] = None if None in api else round(max(api), 1)
        result["peak_rss_mib"] = peak_rss_mib(process.pid)
        try:
            result["open_fds"] = len(os.listdir(f"/proc/{process.pid}/fd"))
        except OSError:
            result["open_fds"] = None
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=args.exit_timeout)
            result["sigterm_ms"] = round((time.monotonic() - started) * 1000, 1)
        except subprocess.TimeoutExpired:
            result["sigterm_ms"] = None
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(read_end)
        os.unlink(image)
        if listener:
            listener.close()
            os.unlink(f"{vsock}_{VSOCK_PORT}")
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build-dir", default=os.path.join(ROOT, "build", "release"))
    parser.add_argument("--kvmm", help="kvmm binary (default: the build directory's)")
    parser.add_argument("--only", action="append", choices=sorted(ATTACKS), help="run only this attack")
    parser.add_argument("--attack-seconds", type=float, default=3.0)
    parser.add_argument("--api-timeout", type=float, default=10.0)
    parser.add_argument("--exit-timeout", type=float, default=30.0)
    args = parser.parse_args()
    kvmm = args.kvmm or os.path.join(args.build_dir, "src", "cli", "kvmm")
    guest = os.path.join(args.build_dir, "tests", "guests", "kvmm-test-guest.elf")
    with tempfile.TemporaryDirectory(prefix="kvmm-hostile-") as workdir:
        for name in args.only or list(ATTACKS):
            result = run_attack(name, kvmm, guest, args, workdir)
            print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

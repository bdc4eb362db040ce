#!/usr/bin/env python3
"""API benchmark: how fast kvmm's Firecracker-compatible API is ready and answers.

Measures, with the release build:
  - exec to API socket ready: wall time from just before exec of `kvmm --api-sock PATH` to the
    first successful connect() on the socket (polled every 50 us), median of --runs starts;
    also the CPU time kvmm's threads had used by then, from /proc/PID/task/*/schedstat (Firecracker
    publishes a target of 8 CPU-ms to API readiness);
  - request latency: GET / and PATCH /vm (Paused, Resumed alternately) on a running test guest
    (scenario keyboard-wait), each request on a kept-alive connection, --requests of each:
    median, p90 and p99 round trip; also PATCH /drives on its 64 MiB drive: a new rate_limiter
    (two limits in turn) and path_on_host moving the drive between two image files (each move
    drains the old image's requests, opens and locks the new file and signals the guest).
kvmm alone: there is no peer in this run (Firecracker is not packaged in Debian).
This is a benchmark, not a test: it prints numbers and fails only when a run fails.
Usage: python3 bench/api_bench.py [--runs 20] [--requests 500] [--build-dir build/release] [--json]
"""
import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_ms(pid):
    """CPU time of all the process's threads so far, from schedstat (nanoseconds)."""
    total_ns = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/schedstat", encoding="ascii") as schedstat:
            total_ns += int(schedstat.read().split()[0])
    return total_ns / 1e6


def start_kvmm(kvmm, socket_path, extra=()):
    started = time.perf_counter()
    process = subprocess.Popen([kvmm, "--api-sock", socket_path, *extra], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            client.connect(socket_path)
            ready = time.perf_counter() - started
            client.close()
            return process, ready
        except (FileNotFoundError, ConnectionRefusedError):
            client.close()
            if process.poll() is not None:
                raise RuntimeError(f"kvmm exited with {process.returncode} before the API was ready")
            if time.perf_counter() - started > 5:
                raise RuntimeError("the API socket was not ready within 5 s")
            time.sleep(0.00005)


def stop(process):
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)  # our own child, by its pid
    process.wait()


class Connection:
    """One kept-alive HTTP/1.1 connection on a Unix socket."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.buffer = b""

    def request(self, method, path, body=None):
        data = body.encode() if body else b""
        head = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        self.sock.sendall(head.encode() + b"\r\n" + data)
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.sock.recv(65536)
        header, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status = int(header.split()[1])
        length = 0
        for line in header.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(self.buffer) < length:
            self.buffer += self.sock.recv(65536)
        body_bytes, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, body_bytes


def summary(samples_ms):
    ordered = sorted(samples_ms)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]
    return {"median_ms": statistics.median(ordered), "p90_ms": pick(0.9), "p99_ms": pick(0.99),
            "min_ms": ordered[0], "max_ms": ordered[-1], "n": len(ordered)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--build-dir", default=os.path.join(ROOT, "build", "release"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    kvmm = os.path.join(args.build_dir, "src", "cli", "kvmm")
    guest = os.path.join(args.build_dir, "tests", "guests", "kvmm-test-guest.elf")
    results = {}
    with tempfile.TemporaryDirectory(prefix="kvmm-api-bench-") as directory:
        socket_path = os.path.join(directory, "api.sock")
        ready_ms, ready_cpu_ms = [], []
        for run in range(args.runs + 1):
            process, ready = start_kvmm(kvmm, socket_path)
            cpu = cpu_ms(process.pid)
            stop(process)
            if run > 0:  # the first start warms the page cache
                ready_ms.append(ready * 1000)
                ready_cpu_ms.append(cpu)
        results["exec_to_api_ready"] = summary(ready_ms)
        results["cpu_ms_at_api_ready"] = summary(ready_cpu_ms)

        images = [os.path.join(directory, name) for name in ("a.img", "b.img")]
        for image in images:
            with open(image, "wb") as file:
                file.truncate(64 << 20)
        limits = ['{"bandwidth": {"size": 1048576, "refill_time": 100}}', '{"ops": {"size": 1000, "refill_time": 1000}}']
        process, _ = start_kvmm(kvmm, socket_path)
        try:
            connection = Connection(socket_path)
            for method, path, body in [
                ("PUT", "/machine-config", '{"vcpu_count": 1, "mem_size_mib": 64}'),
                ("PUT", "/drives/data", json.dumps({"drive_id": "data", "path_on_host": images[0],
                                                    "is_root_device": False, "is_read_only": False})),
                ("PUT", "/boot-source", json.dumps({"kernel_image_path": guest, "boot_args": "test=keyboard-wait"})),
                ("PUT", "/actions", '{"action_type": "InstanceStart"}'),
            ]:
                status, answer = connection.request(method, path, body)
                if status != 204:
                    raise RuntimeError(f"{method} {path}: {status} {answer!r}")
            for name, requests in [
                ("GET /", [("GET", "/", None)]),
                ("PATCH /vm", [("PATCH", "/vm", '{"state": "Paused"}'), ("PATCH", "/vm", '{"state": "Resumed"}')]),
                ("PATCH /drives limits", [("PATCH", "/drives/data", f'{{"drive_id": "data", "rate_limiter": {limit}}}')
                                          for limit in limits]),
                ("PATCH /drives path", [("PATCH", "/drives/data",
                                         json.dumps({"drive_id": "data", "path_on_host": image}))
                                        for image in reversed(images)]),
            ]:
                samples = []
                for index in range(args.requests):
                    method, path, body = requests[index % len(requests)]
                    begin = time.perf_counter()
                    status, answer = connection.request(method, path, body)
                    samples.append((time.perf_counter() - begin) * 1000)
                    if status not in (200, 204):
                        raise RuntimeError(f"{method} {path}: {status} {answer!r}")
                results[name] = summary(samples)
        finally:
            stop(process)

    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"kvmm API benchmark ({args.runs} starts, {args.requests} requests of each kind; kvmm alone)")
    for name, stats in results.items():
        print(f"  {name:22} " + "  ".join(f"{key}={value:.3f}" if isinstance(value, float) else f"{key}={value}"
                                          for key, value in stats.items()))


if __name__ == "__main__":
    main()

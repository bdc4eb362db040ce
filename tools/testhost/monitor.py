#!/usr/bin/env python3
"""Runs human-monitor (HMP) commands on the test host's QEMU through its Unix socket and
prints their output: run-in-testhost.sh calls it when L1 has gone silent, to record where
L1's vCPUs are (halted or running, RIP, LAPIC timer) before it kills QEMU.

Usage: monitor.py SOCKET COMMAND...   e.g. monitor.py run/monitor.sock "info registers -a"
Exit status 1 (message on stderr) when the socket cannot be reached or stays silent.
"""
import socket
import sys

PROMPT = b"(qemu) "
TIMEOUT_SECONDS = 10


def read_until_prompt(connection: socket.socket) -> bytes:
    data = b""
    while not data.endswith(PROMPT):
        chunk = connection.recv(65536)
        if not chunk:
            raise ConnectionError("QEMU closed the monitor socket")
        data += chunk
    return data[: -len(PROMPT)]


def main() -> int:
    if len(sys.argv) < 3:
        print("usage: monitor.py SOCKET COMMAND...", file=sys.stderr)
        return 2
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(TIMEOUT_SECONDS)
            connection.connect(sys.argv[1])
            read_until_prompt(connection)  # the banner
            for command in sys.argv[2:]:
                connection.sendall(command.encode() + b"\n")
                # HMP echoes the command line (with terminal escapes) before its output.
                output = read_until_prompt(connection).decode(errors="replace")
                lines = output.replace("\r", "").split("\n")[1:]
                print(f"--- (qemu) {command}")
                print("\n".join(line for line in lines if line.strip()))
    except (OSError, ConnectionError) as error:
        print(f"monitor.py: {sys.argv[1]}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Active-connection locality probe: for each CPU, pinned connections to an HTTP server.

    rfdprobe.py --host 10.95.0.2 --port 80 --per-cpu 20

Each connection sends one GET (Connection: close), reads the whole reply, and
records its local port and SO_INCOMING_CPU (the CPU that processed the
reply). Prints JSON: the share of connections whose reply was processed on
the connecting CPU, and the share whose port encodes that CPU
(port & mask == cpu, mask = roundup_pow_of_two(possible CPUs) - 1).
Run it under LD_PRELOAD=libfsocket.so to get RFD ports from the module.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
from pathlib import Path

SO_INCOMING_CPU = getattr(socket, "SO_INCOMING_CPU", 49)


def cpu_mask() -> int:
    ncpu = int(Path("/sys/devices/system/cpu/possible").read_text().strip().split("-")[-1]) + 1
    return (1 << (ncpu - 1).bit_length()) - 1 if ncpu > 1 else 0


def one(host: str, port: int) -> tuple[int, int]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect((host, port))
        s.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        while s.recv(65536):
            pass
        return s.getsockname()[1], s.getsockopt(socket.SOL_SOCKET, SO_INCOMING_CPU)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("--per-cpu", type=int, default=20)
    args = ap.parse_args()
    if args.per_cpu < 1 or not 0 < args.port < 65536:
        ap.error("--per-cpu must be >= 1 and --port 1-65535")
    mask = cpu_mask()
    conns = []
    for cpu in sorted(os.sched_getaffinity(0)):
        os.sched_setaffinity(0, {cpu})
        for _ in range(args.per_cpu):
            lport, incoming = one(args.host, args.port)
            conns.append({"cpu": cpu, "port": lport, "incoming_cpu": incoming})
    n = len(conns)
    print(
        json.dumps(
            {
                "connections": n,
                "reply_on_cpu_share": sum(c["incoming_cpu"] == c["cpu"] for c in conns) / n,
                "port_encodes_cpu_share": sum((c["port"] & mask) == c["cpu"] for c in conns) / n,
                "conns": conns,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Short-connection workload for the guest: a prefork server and pinned clients.

The server listens once, forks one worker per CPU (each pinned to its CPU,
each in its own epoll on the shared non-blocking listener, as nginx does),
and answers each connection with one small reply. One client process per
CPU, pinned, opens --conns connections one after another, sends its CPU
number and reads the reply. Run it under LD_PRELOAD=libfsocket.so to get
fastsocket's local listeners without changing it.

Prints one JSON object: connections, seconds, cps, and the locality share
(connections accepted by the worker on the CPU the client ran on; over
loopback that is the CPU that processed the SYN).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import sys
import time


def worker(lsock: socket.socket, cpu: int, out_fd: int) -> None:
    os.sched_setaffinity(0, {cpu})
    ep = select.epoll()
    ep.register(lsock.fileno(), select.EPOLLIN)
    local = remote = 0
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    while not stop:
        try:
            events = ep.poll(0.2)
        except InterruptedError:
            continue
        for _ in events:
            while True:
                try:
                    conn, _ = lsock.accept()
                except (BlockingIOError, InterruptedError):
                    break
                with conn:
                    conn.setblocking(True)
                    data = conn.recv(16)
                    if data and int(data) == cpu:
                        local += 1
                    else:
                        remote += 1
                    conn.sendall(b"HTTP/1.0 200 OK\r\n\r\nok")
    os.write(out_fd, json.dumps({"cpu": cpu, "local": local, "remote": remote}).encode() + b"\n")
    os._exit(0)


def client(port: int, cpu: int, conns: int) -> None:
    os.sched_setaffinity(0, {cpu})
    msg = str(cpu).encode()
    for _ in range(conns):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as c:
            c.sendall(msg)
            while c.recv(64):
                pass
    os._exit(0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8400)
    ap.add_argument("--conns", type=int, default=200, help="connections per client CPU")
    ap.add_argument("--cpus", type=int, default=os.cpu_count())
    args = ap.parse_args()
    if args.conns < 1 or not 1 <= args.cpus <= (os.cpu_count() or 1):
        ap.error("--conns must be >= 1 and --cpus between 1 and the CPU count")

    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", args.port))
    lsock.listen(1024)
    lsock.setblocking(False)
    rfd, wfd = os.pipe()
    workers = []
    for cpu in range(args.cpus):
        pid = os.fork()
        if pid == 0:
            os.close(rfd)
            worker(lsock, cpu, wfd)
        workers.append(pid)
    os.close(wfd)
    time.sleep(0.5)  # let the workers reach epoll_wait (and spawn local listeners)
    start = time.monotonic()
    clients = []
    for cpu in range(args.cpus):
        pid = os.fork()
        if pid == 0:
            client(args.port, cpu, args.conns)
        clients.append(pid)
    failed = sum(os.waitpid(pid, 0)[1] != 0 for pid in clients)
    elapsed = time.monotonic() - start
    for pid in workers:
        os.kill(pid, signal.SIGTERM)
    results = []
    with os.fdopen(rfd) as r:
        for line in r:
            results.append(json.loads(line))
    for pid in workers:
        os.waitpid(pid, 0)
    total = args.cpus * args.conns
    accepted = sum(w["local"] + w["remote"] for w in results)
    local = sum(w["local"] for w in results)
    print(
        json.dumps(
            {
                "connections": total,
                "accepted": accepted,
                "failed_clients": failed,
                "seconds": round(elapsed, 3),
                "cps": round(total / elapsed, 1),
                "local_share": round(local / accepted, 4) if accepted else 0.0,
                "workers": results,
            }
        )
    )
    return 0 if failed == 0 and accepted == total else 1


if __name__ == "__main__":
    sys.exit(main())

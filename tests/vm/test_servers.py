"""Debian's real servers under LD_PRELOAD=libfsocket.so, driven with real load.

Each server starts in the guest with the library preloaded; the load is
short connections (one request per connection). Every request must be
answered, with no socket error. With the module loaded, the SYNs must
also have been taken by local listeners (the /proc/net/fastsocket
counters), which proves the workers spawned them.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.vm.guest import kernel_dir, sh

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def fs_counters() -> dict[str, int]:
    """Sums over CPUs of /proc/net/fastsocket; empty without the module."""
    try:
        lines = Path("/proc/net/fastsocket").read_text().splitlines()
    except FileNotFoundError:
        return {}
    i = next(n for n, line in enumerate(lines) if line.startswith("cpu listen_local"))
    names = lines[i].split()[1:]
    total = dict.fromkeys(names, 0)
    for row in lines[i + 1 :]:
        for name, value in zip(names, row.split()[1:], strict=True):
            total[name] += int(value)
    return total


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"nothing listens on port {port} after {timeout} s")


class Server:
    """A server process under LD_PRELOAD, stopped and reaped on exit."""

    def __init__(self, argv: list[str], port: int, log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self.port = port
        full_env = {"PATH": PATH, "LD_PRELOAD": str(kernel_dir() / "libfsocket.so"), **(env or {})}
        with open(log, "w") as out:
            self.proc = subprocess.Popen(
                argv, env=full_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def __enter__(self) -> Server:
        try:
            wait_port(self.port, self.proc)
        except AssertionError as exc:
            self.stop()
            raise AssertionError(f"{exc}\n--- server output ---\n{self.log.read_text()}") from None
        return self

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wrk(url: str, seconds: int = 3, conns: int = 8) -> int:
    """Short connections with wrk; returns the request count, asserting no error of any kind."""
    out = sh(f"wrk -t2 -c{conns} -d{seconds}s -H 'Connection: close' {url}", timeout=seconds + 60).stdout
    m = re.search(r"(\d+) requests in", out)
    assert m, out
    assert "Socket errors" not in out, out
    assert "Non-2xx" not in out, out
    requests = int(m.group(1))
    assert requests > 0, out
    return requests


@pytest.fixture
def module() -> Iterator[None]:
    sh("modprobe fastsocket")
    yield
    sh("modprobe -r fastsocket", check=False)


@pytest.fixture
def no_module() -> Iterator[None]:
    sh("modprobe -r fastsocket", check=False)
    yield


NGINX_CONF = """
daemon off;
master_process on;
worker_processes 2;
worker_cpu_affinity 01 10;
user root;
pid {d}/nginx.pid;
error_log {d}/error.log notice;
events {{ worker_connections 1024; accept_mutex {accept_mutex}; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port}{reuseport};
        root {d}/www;
    }}
}}
"""


def run_nginx(tmp_path: Path, port: int, accept_mutex: str, reuseport: bool) -> tuple[int, dict[str, int]]:
    """nginx under load; returns the request count and the counter deltas over the load."""
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("fastsock\n" * 8)
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(d=tmp_path, port=port, accept_mutex=accept_mutex, reuseport=" reuseport" if reuseport else "")
    )
    start = fs_counters()
    with Server(["nginx", "-c", str(conf), "-p", str(tmp_path)], port, tmp_path / "out.log"):
        time.sleep(1)  # the readiness probe may beat the workers to their local listeners
        before = fs_counters()
        requests = wrk(f"http://127.0.0.1:{port}/index.html")
        after = fs_counters()
    delta = {k: after[k] - before[k] for k in after}
    if start:
        delta["spawned"] = after["spawned"] - start["spawned"]
    return requests, delta


@pytest.mark.parametrize(("accept_mutex", "reuseport"), [("off", False), ("on", False), ("off", True)])
def test_nginx_with_module(tmp_path: Path, module: None, accept_mutex: str, reuseport: bool) -> None:
    requests, delta = run_nginx(tmp_path, 8080, accept_mutex, reuseport)
    assert delta["spawned"] >= 2, f"workers spawned {delta['spawned']} local listeners"
    assert delta["listen_local"] > 0
    if accept_mutex == "off" and not reuseport:
        # Both workers are pinned and keep their local listener: every SYN meets one.
        assert delta["listen_local"] >= requests, (delta, requests)
        assert delta["listen_global"] == 0, delta
        # libfsocket accepts on the shared fd and the kernel serves it from the worker's local queue.
        assert delta["accept_local"] >= requests, (delta, requests)
    # accept_mutex on: a worker that loses the mutex removes the listener from
    # epoll, so libfsocket closes its local one (its queue moves to the global
    # listener) until it wins again; reuseport: the SYN's reuseport choice may
    # be another worker's listener. Both stay correct, with less locality.


def cpu_ticks(pids: list[int]) -> int:
    """utime + stime of the processes, in clock ticks."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total


def test_nginx_keeps_serving_when_the_module_is_unloaded(tmp_path: Path, module: None) -> None:
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("fastsock\n")
    conf = tmp_path / "nginx.conf"
    conf.write_text(NGINX_CONF.format(d=tmp_path, port=8082, accept_mutex="off", reuseport=""))
    with Server(["nginx", "-c", str(conf), "-p", str(tmp_path)], 8082, tmp_path / "out.log") as srv:
        time.sleep(1)
        assert fs_counters()["spawned"] >= 2
        load = subprocess.Popen(
            ["wrk", "-t2", "-c8", "-d6s", "-H", "Connection: close", "http://127.0.0.1:8082/index.html"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        time.sleep(2)
        sh("modprobe -r fastsocket")
        out = load.communicate(timeout=120)[0]
        assert "Socket errors" not in out and "Non-2xx" not in out, out
        assert int(re.search(r"(\d+) requests in", out).group(1)) > 0, out
        # The workers dropped their shut-down local listeners: idle, they do not spin on them.
        workers = [int(p) for p in sh(f"pgrep -P {srv.proc.pid}").stdout.split()]
        assert len(workers) == 2
        before = cpu_ticks(workers)
        time.sleep(2)
        assert cpu_ticks(workers) - before <= 10, "nginx workers busy while idle after the unload"
        # and they still answer, now through the shared listener
        assert wrk("http://127.0.0.1:8082/index.html", seconds=1) > 0


def test_nginx_without_module(tmp_path: Path, no_module: None) -> None:
    requests, delta = run_nginx(tmp_path, 8081, "off", False)
    assert requests > 0 and delta == {}


HAPROXY_CONF = """
global
    nbthread 2
    cpu-map auto:1/1-2 0-1
    maxconn 2000
defaults
    mode http
    timeout connect 5s
    timeout client 10s
    timeout server 10s
frontend fe
    bind 127.0.0.1:{port}
    http-request return status 200 content-type text/plain string "fastsock"
"""


def test_haproxy_threads(tmp_path: Path, module: None) -> None:
    """One HAProxy process, a thread pinned per CPU: a local listener per thread, every SYN meets one."""
    conf = tmp_path / "haproxy.cfg"
    conf.write_text(HAPROXY_CONF.format(port=8090))
    start = fs_counters()
    with Server(["haproxy", "-db", "-f", str(conf)], 8090, tmp_path / "out.log"):
        time.sleep(1)  # the readiness probe may beat the threads to their local listeners
        before = fs_counters()
        requests = wrk("http://127.0.0.1:8090/")
        after = fs_counters()
    delta = {k: after[k] - before[k] for k in after}
    assert requests > 0
    assert before["spawned"] - start["spawned"] == 2, "one local listener per HAProxy thread"
    # On loopback a SYN is processed on wrk's CPU, where a thread of HAProxy has its local listener.
    assert delta["listen_global"] == 0 and delta["listen_local"] >= requests, (delta, requests)
    assert delta["accept_local"] >= requests, (delta, requests)


def short_requests(port: int, count: int, exchange) -> None:
    """count connections, one exchange each: exchange(i) gives (request, expected reply)."""
    for i in range(count):
        request, expected = exchange(i)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.sendall(request)
            data = b""
            while len(data) < len(expected):
                chunk = c.recv(4096)
                assert chunk, f"connection {i}: closed after {data!r}, expected {expected!r}"
                data += chunk
            assert data == expected, f"connection {i}"


def redis_argv(port: int, tmp_path: Path) -> list[str]:
    return [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(tmp_path),
    ]


def test_redis(tmp_path: Path, module: None) -> None:
    with Server(redis_argv(6390, tmp_path), 6390, tmp_path / "out.log"):
        short_requests(
            6390, 100, lambda i: (f"SET k{i} v{i:04d}\r\nGET k{i}\r\n".encode(), f"+OK\r\n$5\r\nv{i:04d}\r\n".encode())
        )
        sh("redis-benchmark -p 6390 -t ping,set,get -n 300 -c 4 -k 0 -q", timeout=120)


def test_redis_pinned_gets_a_local_listener(tmp_path: Path, module: None) -> None:
    """FSOCKET_PIN=1 pins redis's event loop to the CPU it runs on, which then gets its local listener."""
    before = fs_counters()
    with Server(redis_argv(6391, tmp_path), 6391, tmp_path / "out.log", {"FSOCKET_PIN": "1"}):
        short_requests(6391, 100, lambda i: (b"PING\r\n", b"+PONG\r\n"))
    after = fs_counters()
    assert after["spawned"] == before["spawned"] + 1


def test_redis_confined_to_one_cpu_passes_through(tmp_path: Path, module: None) -> None:
    """Under `taskset -c 1` every connection is redis's own CPU's already: no listener is enabled."""
    before = fs_counters()
    argv = ["taskset", "-c", "1", *redis_argv(6392, tmp_path)]
    with Server(argv, 6392, tmp_path / "out.log", {"FSOCKET_VERBOSE": "1"}):
        short_requests(6392, 100, lambda i: (b"PING\r\n", b"+PONG\r\n"))
    after = fs_counters()
    assert after["spawned"] == before["spawned"]
    assert after["listen_local"] + after["listen_global"] == before["listen_local"] + before["listen_global"]
    assert "may run on one CPU only" in (tmp_path / "out.log").read_text()


def test_memcached_threads(tmp_path: Path, module: None) -> None:
    argv = ["memcached", "-u", "root", "-l", "127.0.0.1", "-p", "11311", "-U", "0", "-t", "2"]
    with Server(argv, 11311, tmp_path / "out.log"):
        short_requests(11311, 100, lambda i: (f"set k{i} 0 0 5\r\n{i:05d}\r\n".encode(), b"STORED\r\n"))
        short_requests(
            11311, 100, lambda i: (f"get k{i}\r\n".encode(), f"VALUE k{i} 0 5\r\n{i:05d}\r\nEND\r\n".encode())
        )

"""Helpers for the per-CPU local listener tests (guest side).

Used by tests/vm/test_fastsocket_listen.py and test_selftests.py: the socket options
of kernel/include/uapi/linux/fastsocket.h, the module and its parameter, the
/proc/net/fastsocket counters, network namespaces and CPU pinning, a raw-packet TCP
peer for half-open connections, and worker/client processes (forked; each reports
JSON events, so the test sees what a process did even when it kills it).

Wire protocol: the client sends "<client cpu> <seq>\\n"; the worker answers
"ok <worker cpu> <SO_INCOMING_CPU of the accepted socket>\\n" and closes.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import queue
import re
import select
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

# -- the contract (kernel/include/uapi/linux/fastsocket.h) ----------------------

SOL_TCP = socket.IPPROTO_TCP
TCP_FASTSOCKET_LISTEN = 0x4653
TCP_FASTSOCKET_LOCAL = 0x4654
TCP_FASTSOCKET_INFO = 0x4655
FASTSOCKET_INFO_ENABLED = 1 << 0
FASTSOCKET_INFO_LOCAL = 1 << 1
INFO_LEN = 16  # struct fastsocket_info
SO_INCOMING_CPU = getattr(socket, "SO_INCOMING_CPU", 49)

PROC = Path("/proc/net/fastsocket")
LISTEN_SPAWN = Path("/sys/module/fastsocket/parameters/listen_spawn")
COUNTERS = ("listen_local", "listen_global", "accept_local", "accept_empty", "spawned", "migrated")
SPAWN_OFF, SPAWN_MANUAL, SPAWN_AUTO = 0, 1, 2


def _fd(s: socket.socket | int) -> int:
    return s if isinstance(s, int) else s.fileno()


def enable(g: socket.socket, value: int = 1) -> None:
    """setsockopt(G, SOL_TCP, TCP_FASTSOCKET_LISTEN, value)."""
    g.setsockopt(SOL_TCP, TCP_FASTSOCKET_LISTEN, value)


def make_local(local: socket.socket, g: socket.socket | int, cpu: int) -> None:
    """setsockopt(L, SOL_TCP, TCP_FASTSOCKET_LOCAL, {listen_fd, cpu})."""
    local.setsockopt(SOL_TCP, TCP_FASTSOCKET_LOCAL, struct.pack("ii", _fd(g), cpu))


@dataclass(frozen=True)
class Info:
    flags: int
    cpu: int
    nr_local: int
    reserved: int


def info(s: socket.socket) -> Info:
    raw = s.getsockopt(SOL_TCP, TCP_FASTSOCKET_INFO, INFO_LEN)
    assert len(raw) == INFO_LEN, f"TCP_FASTSOCKET_INFO returned {len(raw)} bytes, want {INFO_LEN}"
    return Info(*struct.unpack("IiII", raw))


def errno_of(fn: Callable, *args) -> int:
    """The errno fn(*args) fails with, 0 when it succeeds."""
    try:
        fn(*args)
    except OSError as exc:
        return exc.errno
    return 0


def ename(e: int) -> str:
    return errno.errorcode.get(e, str(e)) if e else "success"


# -- module, parameter, counters ------------------------------------------------


def _run(cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise AssertionError(f"`{' '.join(cmd)}` exited {res.returncode}: {res.stdout}{res.stderr}")
    return res


def module_loaded() -> bool:
    return any(line.split()[0] == "fastsocket" for line in Path("/proc/modules").read_text().splitlines())


def load_module() -> None:
    _run(["modprobe", "fastsocket"])


def unload_module() -> None:
    _run(["modprobe", "-r", "fastsocket"])


def get_listen_spawn() -> int:
    return int(LISTEN_SPAWN.read_text().strip())


def set_listen_spawn(value: int | str) -> None:
    """Write the module parameter; raises OSError with the kernel's errno."""
    fd = os.open(LISTEN_SPAWN, os.O_WRONLY)
    try:
        os.write(fd, f"{value}\n".encode())
    finally:
        os.close(fd)


def read_counters(text: str | None = None) -> dict[int, dict[str, int]]:
    """The per-CPU table of /proc/net/fastsocket: {cpu: {column: value}}.

    The header's first word is "cpu" (not "cpus", the line above it); rows are "cpuN v1 v2 ...".
    """
    if text is None:
        text = PROC.read_text()
    header: list[str] | None = None
    rows: dict[int, dict[str, int]] = {}
    for line in text.splitlines():
        tok = line.split()
        if not tok:
            continue
        if header is None:
            if tok[0].rstrip(":") == "cpu" and "listen_local" in tok:
                header = tok[1:]
            continue
        m = re.fullmatch(r"cpu(\d+):?", tok[0])
        if not m:
            continue
        vals = tok[1:]
        assert len(vals) == len(header), f"row {line!r} does not match header {header}:\n{text}"
        rows[int(m.group(1))] = {name: int(v) for name, v in zip(header, vals, strict=True)}
    assert header is not None, f"no per-CPU counter table in {PROC}:\n{text}"
    missing = [c for c in COUNTERS if c not in header]
    assert not missing, f"{PROC} lacks columns {missing}:\n{text}"
    online = online_cpus()
    assert set(online) <= set(rows), f"{PROC} has rows for CPUs {sorted(rows)}, online {online}:\n{text}"
    return rows


def counter_delta(before: dict[int, dict[str, int]], after: dict[int, dict[str, int]]) -> dict[int, dict[str, int]]:
    return {cpu: {k: after[cpu][k] - before.get(cpu, {}).get(k, 0) for k in after[cpu]} for cpu in after}


def counter_total(delta: dict[int, dict[str, int]], column: str) -> int:
    return sum(row[column] for row in delta.values())


def online_cpus() -> list[int]:
    out: list[int] = []
    for part in Path("/sys/devices/system/cpu/online").read_text().strip().split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


# -- namespaces, affinity --------------------------------------------------------

CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"setns: {os.strerror(e)}")


@contextlib.contextmanager
def netns(name: str) -> Iterator[None]:
    """Run the block (and processes started in it) in network namespace `name` (from `ip netns add`).

    Sockets created inside stay in that namespace after the block.
    """
    orig = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(orig)
    finally:
        os.close(target)
        os.close(orig)


@contextlib.contextmanager
def pinned(cpus: set[int] | int) -> Iterator[None]:
    """Pin the calling thread to cpus for the block, then restore its affinity."""
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpus} if isinstance(cpus, int) else cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, old)


def echo_from(cpus: list[int], port: int, n: int, timeout: float = 10, tag: str = "") -> None:
    """From a thread pinned to each CPU in turn, n loopback connections to port that each must echo a line back."""
    for c in cpus:
        with pinned(c):
            for i in range(n):
                with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
                    line = f"{tag}{c} {i}".encode()
                    s.sendall(line)
                    assert s.recv(64) == line, f"connection {i} from CPU {c} got no echo"


def listener(family: int, addr: str, backlog: int = 128, nonblocking: bool = True) -> socket.socket:
    g = socket.socket(family, socket.SOCK_STREAM)
    g.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    g.bind((addr, 0))
    g.listen(backlog)
    g.setblocking(not nonblocking)
    return g


# -- the worker and client processes, seen from the test ---------------------------

# Parent-side pipe ends of every Proc not yet finished: a new child closes them, so that
# a worker sees its own stop signal (EOF) and the parent sees each child's end of output.
_parent_fds: set[int] = set()


class Proc:
    """A forked worker or client: body(cfg, ctl_fd, emit) runs in the child, whose JSON events
    arrive on a reader thread here. Closing the control pipe tells a worker to stop.

    Forked, not exec'd: a fresh Python takes seconds to start under TCG.
    """

    def __init__(self, kind: str, body: Callable[[dict, int, Callable[..., None]], int], cfg: dict) -> None:
        self.kind = kind
        self.cfg = cfg
        self.events: list[dict] = []
        self.returncode: int | None = None
        self._eof = False
        self._q: queue.Queue[dict | None] = queue.Queue()
        ev_r, ev_w = os.pipe()
        ctl_r, ctl_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns into the test
            code = 70
            try:
                for fd in (*_parent_fds, ev_r, ctl_w):
                    os.close(fd)

                def emit(**ev) -> None:
                    data = (json.dumps(ev) + "\n").encode()
                    while data:
                        data = data[os.write(ev_w, data) :]

                try:
                    code = body(cfg, ctl_r, emit)
                except BaseException as exc:
                    import traceback

                    emit(event="error", op="exception", exc=repr(exc), tb=traceback.format_exc())
            finally:
                os._exit(code)
        os.close(ev_w)
        os.close(ctl_r)
        self.pid, self._ev, self._ctl = pid, ev_r, ctl_w
        _parent_fds.update((ev_r, ctl_w))
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._ev, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                try:
                    self._q.put(json.loads(line))
                except ValueError:
                    self._q.put({"event": "garbage", "line": line.decode(errors="replace")})
        self._q.put(None)

    def _pump(self, timeout: float) -> bool:
        """Move one event from the queue; False on timeout or end of output."""
        if self._eof:
            return False
        try:
            ev = self._q.get(timeout=max(timeout, 0))
        except queue.Empty:
            return False
        if ev is None:
            self._eof = True
            return False
        self.events.append(ev)
        return True

    def wait_event(self, pred: Callable[[dict], bool], timeout: float) -> dict:
        """The first event (seen so far or still to come) that satisfies pred."""
        deadline = time.monotonic() + timeout
        i = 0
        while True:
            while i < len(self.events):
                if pred(self.events[i]):
                    return self.events[i]
                i += 1
            left = deadline - time.monotonic()
            if left <= 0 or (not self._pump(left) and self._eof):
                raise AssertionError(f"{self.describe()}: expected event did not come in {timeout} s")

    def wait_until(self, pred: Callable[[list[dict]], bool], timeout: float) -> None:
        """Until pred(all events so far) holds."""
        deadline = time.monotonic() + timeout
        while not pred(self.events):
            left = deadline - time.monotonic()
            if left <= 0 or (not self._pump(min(left, 0.2)) and self._eof and not pred(self.events)):
                raise AssertionError(f"{self.describe()}: condition not met in {timeout} s")

    def drain(self) -> None:
        while self._pump(0):
            pass

    def ready(self, timeout: float = 30) -> dict:
        ev = self.wait_event(lambda e: e["event"] in ("ready", "error"), timeout)
        if ev["event"] == "error":
            raise AssertionError(f"{self.describe()}: {ev}")
        return ev

    def _wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def _close(self) -> None:
        if self._ctl >= 0:
            os.close(self._ctl)
            _parent_fds.discard(self._ctl)
            self._ctl = -1

    def _reap_output(self) -> None:
        self._t.join(timeout=10)
        self.drain()
        if not self._t.is_alive() and self._ev >= 0:
            os.close(self._ev)
            _parent_fds.discard(self._ev)
            self._ev = -1

    def finish(self, timeout: float = 60) -> list[dict]:
        """Close the control pipe (a worker's stop signal), wait for exit, return all events."""
        self._close()
        if not self._wait(timeout):
            self.kill()
            raise AssertionError(f"{self.describe()}: did not exit in {timeout} s")
        self._reap_output()
        if self.returncode != 0:
            raise AssertionError(f"{self.describe()}: exited {self.returncode}")
        return self.events

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)
            self._wait(10)
        self._close()
        if self.returncode is not None:
            self._reap_output()

    def describe(self) -> str:
        return f"{self.kind} {self.cfg} (pid {self.pid}, exit {self.returncode}); events {self.events[-10:]}"

    def conns(self) -> list[dict]:
        return [e for e in self.events if e["event"] == "conn"]

    def summary(self) -> dict:
        self.drain()
        for e in reversed(self.events):
            if e["event"] == "summary":
                return e
        raise AssertionError(f"{self.describe()}: no summary")


def start_worker(g: socket.socket, cpu: int, *, local: bool, mode: str = "serve", timeout: float = 120) -> Proc:
    """A worker pinned to cpu: with local=True it makes a local listener for G first.

    mode "serve": accept on G (epoll on G and L) until told to stop; "hold": never accept.
    """
    cfg = {"gfd": g.fileno(), "family": int(g.family), "cpu": cpu, "local": local, "mode": mode, "timeout": timeout}
    return Proc("worker", worker_main, cfg)


def start_client(family: int, addr: str, port: int, cpu: int, **kw) -> Proc:
    """A client pinned to cpu. kw: count (connections), duration (s, instead of count),
    mode "seq" (one at a time) or "hold" (open all, then collect replies), timeout, max_errors."""
    cfg = {"family": int(family), "addr": addr, "port": port, "cpu": cpu, **kw}
    return Proc("client", client_main, cfg)


@contextlib.contextmanager
def processes() -> Iterator[list[Proc]]:
    """Every Proc appended to the yielded list is killed on the way out."""
    procs: list[Proc] = []
    try:
        yield procs
    finally:
        for p in procs:
            p.kill()


def report(name: str, data: dict) -> None:
    """Print a result line and keep it next to the guest results (on the host: build/vm-results/...)."""
    line = json.dumps({"report": name, **data}, sort_keys=True)
    print(line)
    res = os.environ.get("FASTSOCK_RESULTS")
    if res:
        with contextlib.suppress(OSError), open(Path(res).parent / "fastsocket-listen-report.jsonl", "a") as f:
            f.write(line + "\n")


# -- raw TCP over loopback (half-open connections) ----------------------------------


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10


def tcp4_packet(
    src: str, dst: str, sport: int, dport: int, seq: int, ack: int, flags: int, payload: bytes = b""
) -> bytes:
    """An IPv4 + TCP packet for an IPPROTO_RAW socket (the kernel fills the IP checksum and id)."""
    opts = struct.pack("!BBH", 2, 4, 1460) if flags & TCP_SYN else b""  # MSS
    off = (20 + len(opts)) // 4
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, off << 4, flags, 65535, 0, 0) + opts + payload
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", _csum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, socket.IPPROTO_TCP, 0,
        socket.inet_aton(src), socket.inet_aton(dst),
    )  # fmt: skip
    return ip + tcp


class RawPeer:
    """A TCP peer made of raw packets on loopback, at an address nothing local answers for.

    The caller routes `addr` to lo (`ip route add <addr>/32 dev lo`): the server's packets to it
    are then seen on lo (captured here) and discarded on input, so nothing resets the connection.
    """

    def __init__(self, addr: str, sport: int, dst: str, dport: int) -> None:
        self.addr, self.sport, self.dst, self.dport = addr, sport, dst, dport
        self.isn = 0x1000_0000 + (sport << 8)
        self.tx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self.cap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        self.cap.bind(("lo", 0))
        self.server_isn: int | None = None

    def close(self) -> None:
        self.tx.close()
        self.cap.close()

    def send(self, seq: int, ack: int, flags: int, payload: bytes = b"") -> None:
        pkt = tcp4_packet(self.addr, self.dst, self.sport, self.dport, seq, ack, flags, payload)
        self.tx.sendto(pkt, (self.dst, 0))

    def expect(self, flags: int, timeout: float = 5) -> tuple[int, int]:
        """Wait for a server packet to us with exactly these flags; returns (seq, ack)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            r, _, _ = select.select([self.cap], [], [], left)
            if not r:
                break
            frame = self.cap.recv(65535)
            ip = frame[14:]  # lo frames carry a (zero) Ethernet header
            if len(ip) < 40 or ip[0] >> 4 != 4 or ip[9] != socket.IPPROTO_TCP:
                continue
            ihl = (ip[0] & 0xF) * 4
            src, dst = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
            sport, dport, seq, ack, _, fl = struct.unpack("!HHIIBB", ip[ihl : ihl + 14])
            if (src, dst, sport, dport) == (self.dst, self.addr, self.dport, self.sport) and fl & 0x3F == flags:
                return seq, ack
        raise AssertionError(f"no packet with flags {flags:#x} from {self.dst}:{self.dport} in {timeout} s")

    def syn(self) -> int:
        """Send the SYN, capture the SYN-ACK; returns the server's ISN. The final ACK is not sent."""
        self.send(self.isn, 0, TCP_SYN)
        seq, ack = self.expect(TCP_SYN | TCP_ACK)
        assert ack == (self.isn + 1) & 0xFFFFFFFF, f"SYN-ACK acks {ack}, want {self.isn + 1}"
        self.server_isn = seq
        return seq

    def ack(self, payload: bytes = b"") -> None:
        """The handshake's final ACK, carrying payload."""
        assert self.server_isn is not None
        self.send(self.isn + 1, (self.server_isn + 1) & 0xFFFFFFFF, TCP_ACK | (TCP_PSH if payload else 0), payload)

    def reset(self, sent: int) -> None:
        """RST at the server's rcv_nxt (after `sent` payload bytes), dropping the connection."""
        self.send((self.isn + 1 + sent) & 0xFFFFFFFF, 0, TCP_RST)


# -- the processes themselves (run in the forked child) ------------------------------


def _read_line(s: socket.socket, limit: int = 256) -> bytes:
    buf = b""
    while not buf.endswith(b"\n") and len(buf) < limit:
        b = s.recv(limit - len(buf))
        if not b:
            break
        buf += b
    return buf


def worker_main(cfg: dict, ctl: int, _emit: Callable[..., None]) -> int:
    cpu = cfg["cpu"]
    os.sched_setaffinity(0, {cpu})
    g = socket.socket(fileno=cfg["gfd"])
    g.setblocking(False)
    local = None
    if cfg["local"]:
        local = socket.socket(cfg["family"], socket.SOCK_STREAM)
        try:
            make_local(local, g, cpu)
        except OSError as exc:
            _emit(event="error", op="TCP_FASTSOCKET_LOCAL", errno=exc.errno, name=ename(exc.errno))
            return 3
    _emit(event="ready", pid=os.getpid(), cpu=cpu, local_fd=local.fileno() if local else None)
    if cfg["mode"] == "hold":
        select.select([ctl], [], [], cfg["timeout"])
        return 0
    ep = select.epoll()
    ep.register(g.fileno(), select.EPOLLIN)
    ep.register(ctl, select.EPOLLIN)
    if local is not None:
        ep.register(local.fileno(), select.EPOLLIN)
    deadline = time.monotonic() + cfg["timeout"]
    accepted = spurious = 0
    stop = False

    def accept_all() -> int:
        n = 0
        while True:
            try:
                conn, _ = g.accept()
            except BlockingIOError:
                return n
            except OSError as exc:
                _emit(event="accept_error", errno=exc.errno, name=ename(exc.errno))
                return n
            n += 1
            serve(conn)

    def serve(conn: socket.socket) -> None:
        try:
            conn.settimeout(10)
            incoming = conn.getsockopt(socket.SOL_SOCKET, SO_INCOMING_CPU)
            hello = _read_line(conn).decode(errors="replace").split()
            ev = {"event": "conn", "worker_cpu": cpu, "incoming_cpu": incoming}
            if len(hello) == 2:
                ev["client_cpu"], ev["seq"] = int(hello[0]), int(hello[1])
            else:
                ev["hello"] = hello
            conn.sendall(f"ok {cpu} {incoming}\n".encode())
            _emit(**ev)
        except OSError as exc:
            _emit(event="conn_error", errno=exc.errno, name=ename(exc.errno), worker_cpu=cpu)
        finally:
            conn.close()

    while not stop and (left := deadline - time.monotonic()) > 0:
        events = ep.poll(left)
        listener_ready = False
        for fd, mask in events:
            if fd == ctl:
                if not os.read(ctl, 4096):
                    stop = True
            elif local is not None and fd == local.fileno() and mask & (select.EPOLLHUP | select.EPOLLERR):
                # the kernel shut the local listener down (module unloaded, G disabled)
                ep.unregister(fd)
                _emit(event="local_hup", mask=mask)
                listener_ready = True
            else:
                listener_ready = True
        if listener_ready:
            n = accept_all()
            accepted += n
            if n == 0:
                spurious += 1
                time.sleep(0.01)  # readable but accept() on G had nothing: do not spin
    accepted += accept_all()
    _emit(event="summary", accepted=accepted, spurious=spurious, timed_out=not stop)
    return 0


def client_main(cfg: dict, ctl: int, _emit: Callable[..., None]) -> int:
    cpu = cfg["cpu"]
    os.sched_setaffinity(0, {cpu})
    fam, addr, port = cfg["family"], cfg["addr"], cfg["port"]
    timeout = cfg.get("timeout", 10)
    errors: list[str] = []
    replies: dict[str, int] = {}
    ok = 0
    _emit(event="ready", pid=os.getpid(), cpu=cpu)

    def connect(seq: int) -> socket.socket:
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect((addr, port))
            s.sendall(f"{cpu} {seq}\n".encode())
        except OSError:
            s.close()
            raise
        return s

    def check(seq: int, line: bytes) -> None:
        nonlocal ok
        parts = line.decode(errors="replace").split()
        if len(parts) != 3 or parts[0] != "ok":
            errors.append(f"{seq}: bad reply {line!r}")
            return
        ok += 1
        replies[parts[1]] = replies.get(parts[1], 0) + 1

    if cfg.get("mode", "seq") == "seq":
        max_errors = cfg.get("max_errors", 5)
        end = time.monotonic() + cfg["duration"] if "duration" in cfg else None
        seq = 0
        while (end is None and seq < cfg["count"]) or (end is not None and time.monotonic() < end):
            try:
                with connect(seq) as s:
                    check(seq, _read_line(s))
            except OSError as exc:
                errors.append(f"{seq}: {exc!r}")
                if len(errors) >= max_errors:
                    break
            seq += 1
        _emit(event="summary", attempted=seq, ok=ok, errors=errors, replies=replies)
        return 0

    # hold: open every connection first, then collect the replies
    socks: dict[socket.socket, int] = {}
    for seq in range(cfg["count"]):
        try:
            socks[connect(seq)] = seq
        except OSError as exc:
            errors.append(f"{seq}: connect: {exc!r}")
    _emit(event="opened", n=len(socks), errors=errors)
    end = time.monotonic() + cfg.get("reply_timeout", 30)
    bufs = dict.fromkeys(socks, b"")
    while socks and (left := end - time.monotonic()) > 0:
        r, _, _ = select.select(list(socks), [], [], left)
        for s in r:
            try:
                b = s.recv(256)
            except OSError as exc:
                errors.append(f"{socks[s]}: {exc!r}")
                b = None
            if b:
                bufs[s] += b
                if not bufs[s].endswith(b"\n"):
                    continue
                check(socks[s], bufs[s])
            elif b is not None:
                errors.append(f"{socks[s]}: closed without a reply")
            s.close()
            del socks[s]
    for s, seq in socks.items():
        errors.append(f"{seq}: no reply in time")
        s.close()
    _emit(event="summary", attempted=cfg["count"], ok=ok, errors=errors, replies=replies)
    return 0

"""Slick test helpers: the tools' build, both implementations behind one interface, Thrift bytes and backends.

An implementation is "kernel" (slick_echo.ko / slick_forwarder.ko, stats in
/proc/net/...) or "user" (the reference processes built from tools/slick into
build/slick-tools, stats written on SIGUSR1). Tests see both through
EchoService / ForwarderService: a port (and ctl_port), stats() -> dict, close().
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
TOOLS_SRC = REPO / "tools" / "slick"
# FASTSOCK_SLICK_TOOLS: test other builds of the tools (e.g. with sanitizers)
TOOLS_OUT = Path(os.environ.get("FASTSOCK_SLICK_TOOLS", REPO / "build" / "slick-tools"))
IDL = TOOLS_SRC / "forwarder.thrift"
PROGRAMS = ("slick_echo_user", "slick_forwarder_user", "slick_load", "slick_sink")

ECHO_KEYS = ("connections_total", "connections_active", "bytes_echoed", "bad_size")
FORWARDER_KEYS = ("clients_active", "backends_active", "forwarded", "unknown_key", "malformed", "backend_errors")
# Fixed by the contract with the kernel modules.
KERNEL_ECHO_PORT = 7007
KERNEL_FWD_PORT = 9090
KERNEL_CTL_PORT = 9091
MAX_MSG = 1048576

log = logging.getLogger(__name__)


# -- building the user-space tools (on the host) ----------------------------------


class SlickBuildError(Exception):
    pass


def build_tools(out: Path = TOOLS_OUT, jobs: int = 2) -> None:
    """make -C tools/slick O=out; raises SlickBuildError with the compiler output."""
    out.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(
        ["make", "-s", f"-j{jobs}", "-C", str(TOOLS_SRC), f"O={out}"], capture_output=True, text=True, timeout=600
    )
    if res.returncode != 0:
        raise SlickBuildError(
            f"make -C {TOOLS_SRC} O={out} failed (it needs gcc, make and libevent-dev):\n{res.stdout}{res.stderr}"
        )


def tools_stale(out: Path = TOOLS_OUT) -> list[str]:
    """Programs missing from out, or all of them if make says something is out of date."""
    missing = [p for p in PROGRAMS if not (out / p).is_file()]
    if missing:
        return missing
    res = subprocess.run(["make", "-q", "-C", str(TOOLS_SRC), f"O={out}"], capture_output=True, text=True)
    return [] if res.returncode == 0 else list(PROGRAMS)


# -- stats ---------------------------------------------------------------------


def parse_stats(text: str, keys: Iterable[str]) -> dict[str, int]:
    """`key value` lines -> dict; every key in keys must be there, each once, with an integer value."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            continue
        if parts[0] in out:
            raise AssertionError(f"stats name {parts[0]} twice in:\n{text}")
        out[parts[0]] = int(parts[1])
    missing = [k for k in keys if k not in out]
    if missing:
        raise AssertionError(f"stats lack {missing}:\n{text}")
    return out


def wait_until(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll cond until it returns a true value; fail naming what did not happen."""
    end = time.monotonic() + timeout
    last: Any = None
    while True:
        last = cond()
        if last:
            return last
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def wait_port(port: int, timeout: float = 30, alive: Callable[[], None] | None = None) -> None:
    """Until something accepts on 127.0.0.1:port (alive() may raise if the server died)."""

    def up() -> bool:
        if alive:
            alive()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            return True
        except OSError:
            return False

    wait_until(up, timeout, f"a listener on port {port}", interval=0.1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def closed_port() -> int:
    """A port nothing listens on (connect gets ECONNREFUSED)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_closed(sock: socket.socket, timeout: float = 15) -> None:
    """The peer closed (EOF or reset) within timeout; data it sends before is ignored."""
    sock.settimeout(timeout)
    end = time.monotonic() + timeout
    try:
        while time.monotonic() < end:
            if not sock.recv(65536):
                return
    except (ConnectionResetError, BrokenPipeError):
        return
    except TimeoutError:
        pass
    raise AssertionError(f"the server did not close the connection within {timeout} s")


# -- implementations -----------------------------------------------------------------


def sh(cmd: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"`{cmd}` exited {res.returncode}\nstdout: {res.stdout}\nstderr: {res.stderr}")
    return res


def module_loaded(name: str) -> bool:
    return any(line.split()[0] == name for line in Path("/proc/modules").read_text().splitlines())


class KernelModule:
    """A Slick module loaded with parameters; stats from its /proc file."""

    def __init__(self, name: str, params: str, proc: str, keys: tuple[str, ...], ports: tuple[int, ...]) -> None:
        self.name, self.proc, self.keys = name, Path(proc), keys
        assert not module_loaded(name), f"{name} is already loaded"
        sh(f"modprobe {name} {params}")
        try:
            for port in ports:
                wait_port(port)
        except AssertionError:
            sh(f"modprobe -r {name}", check=False)
            raise

    def stats(self) -> dict[str, int]:
        return parse_stats(self.proc.read_text(), self.keys)

    def close(self) -> None:
        sh(f"modprobe -r {self.name}", timeout=60)
        assert not module_loaded(self.name), f"{self.name} still loaded after modprobe -r"


class UserProcess:
    """A reference server process; stats() asks it (SIGUSR1) to write its stats file."""

    def __init__(self, argv: list[str], stats_file: Path, keys: tuple[str, ...], port: int) -> None:
        self.stats_file, self.keys = stats_file, keys
        self.log = stats_file.with_suffix(".log")
        prog = Path(argv[0])
        assert prog.is_file(), f"{prog} missing: the host builds it (make -C tools/slick) before the guest boots"
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_port(port, alive=self._alive)
            wait_until(self.stats_file.exists, 10, f"{stats_file}")
        except AssertionError:
            self.close()
            raise

    def _alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.proc.args[0]} exited {self.proc.returncode}:\n{self.output()}")

    def output(self) -> str:
        try:
            return self.log.read_text()[-4000:]
        except OSError:
            return ""

    def stats(self) -> dict[str, int]:
        self._alive()
        self.stats_file.unlink(missing_ok=True)
        os.kill(self.proc.pid, signal.SIGUSR1)
        wait_until(self.stats_file.exists, 10, f"{self.proc.args[0]} to write its stats")
        return parse_stats(self.stats_file.read_text(), self.keys)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # a clean exit after SIGTERM; a crash (e.g. a sanitizer report) shows here
        if self.proc.returncode not in (0, -signal.SIGTERM):
            raise AssertionError(f"{self.proc.args[0]} exited {self.proc.returncode}:\n{self.output()}")


@dataclass
class EchoService:
    impl: str
    port: int
    backend: KernelModule | UserProcess

    def stats(self) -> dict[str, int]:
        return self.backend.stats()

    def close(self) -> None:
        self.backend.close()


@dataclass
class ForwarderService:
    impl: str
    framed: bool
    port: int
    ctl_port: int
    backend: KernelModule | UserProcess

    def stats(self) -> dict[str, int]:
        return self.backend.stats()

    def close(self) -> None:
        self.backend.close()


def start_echo(impl: str, scratch: Path) -> EchoService:
    if impl == "kernel":
        port = KERNEL_ECHO_PORT
        mod = KernelModule("slick_echo", f"port={port} backlog=128", "/proc/net/slick_echo", ECHO_KEYS, (port,))
        return EchoService(impl, port, mod)
    port = free_port()
    argv = [str(TOOLS_OUT / "slick_echo_user"), "--port", str(port), "--backlog", "128"]
    stats = scratch / f"echo-{port}.stats"
    return EchoService(impl, port, UserProcess([*argv, "--stats", str(stats)], stats, ECHO_KEYS, port))


def start_forwarder(impl: str, framed: bool, scratch: Path) -> ForwarderService:
    if impl == "kernel":
        params = f"port={KERNEL_FWD_PORT} ctl_port={KERNEL_CTL_PORT} framed={int(framed)} max_msg={MAX_MSG}"
        ports = (KERNEL_FWD_PORT, KERNEL_CTL_PORT)
        mod = KernelModule("slick_forwarder", params, "/proc/net/slick_forwarder", FORWARDER_KEYS, ports)
        return ForwarderService(impl, framed, KERNEL_FWD_PORT, KERNEL_CTL_PORT, mod)
    port, ctl_port = free_port(), free_port()
    while ctl_port == port:
        ctl_port = free_port()
    stats = scratch / f"forwarder-{port}.stats"
    argv = [
        str(TOOLS_OUT / "slick_forwarder_user"),
        *("--port", str(port), "--ctl-port", str(ctl_port)),
        *("--framed", str(int(framed)), "--max-msg", str(MAX_MSG), "--stats", str(stats)),
    ]
    proc = UserProcess(argv, stats, FORWARDER_KEYS, ctl_port)
    try:
        wait_port(port, alive=proc._alive)
    except AssertionError:
        proc.close()
        raise
    return ForwarderService(impl, framed, port, ctl_port, proc)


# -- Thrift binary protocol bytes (for raw clients and byte-exact checks) -----------

T_STOP, T_BOOL, T_BYTE, T_DOUBLE, T_I16, T_I32, T_I64 = 0, 2, 3, 4, 6, 8, 10
T_STRING, T_STRUCT, T_MAP, T_SET, T_LIST = 11, 12, 13, 14, 15
M_CALL, M_REPLY, M_EXCEPTION, M_ONEWAY = 1, 2, 3, 4
_FIXED = {T_BOOL: ">b", T_BYTE: ">b", T_DOUBLE: ">d", T_I16: ">h", T_I32: ">i", T_I64: ">q"}


def enc_value(ttype: int, value: Any) -> bytes:
    """A value of a Thrift type: containers as (etype, [values]), maps as (ktype, vtype, [(k, v)]),
    structs as a list of (id, type, value)."""
    if ttype in _FIXED:
        return struct.pack(_FIXED[ttype], value)
    if ttype == T_STRING:
        return struct.pack(">i", len(value)) + bytes(value)
    if ttype == T_STRUCT:
        return enc_struct(value)
    if ttype in (T_LIST, T_SET):
        etype, items = value
        return struct.pack(">bi", etype, len(items)) + b"".join(enc_value(etype, v) for v in items)
    if ttype == T_MAP:
        ktype, vtype, items = value
        body = b"".join(enc_value(ktype, k) + enc_value(vtype, v) for k, v in items)
        return struct.pack(">bbi", ktype, vtype, len(items)) + body
    raise ValueError(f"type {ttype}")


def enc_struct(fields: Iterable[tuple[int, int, Any]]) -> bytes:
    return b"".join(struct.pack(">bh", t, fid) + enc_value(t, v) for fid, t, v in fields) + bytes([T_STOP])


def enc_message(name: bytes, mtype: int, seqid: int, args: bytes, strict: bool = True) -> bytes:
    if strict:
        return struct.pack(">Ii", 0x80010000 | mtype, len(name)) + name + struct.pack(">i", seqid) + args
    return struct.pack(">i", len(name)) + name + struct.pack(">bi", mtype, seqid) + args


def msg_call(key: int, payload: bytes, strict: bool = True, mtype: int = M_ONEWAY, extra=()) -> bytes:
    """Forwarder.msg(key, payload), unframed; extra: more (id, type, value) fields after them."""
    return enc_message(b"msg", mtype, 0, enc_struct([(1, T_I32, key), (2, T_STRING, payload), *extra]), strict)


def frame(body: bytes, framed: bool) -> bytes:
    return struct.pack(">i", len(body)) + body if framed else body


class _Reader:
    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data, self.pos = data, pos

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ValueError("truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def skip(self, ttype: int, depth: int = 0) -> Any:
        if depth > 64:
            raise ValueError("too deep")
        if ttype in _FIXED:
            return self.unpack(_FIXED[ttype])
        if ttype == T_STRING:
            return self.take(self.unpack(">i"))
        if ttype == T_STRUCT:
            out = {}
            while (t := self.unpack(">b")) != T_STOP:
                fid = self.unpack(">h")
                out[fid] = (t, self.skip(t, depth + 1))
            return out
        if ttype in (T_LIST, T_SET):
            et, n = self.unpack(">b"), self.unpack(">i")
            return [self.skip(et, depth + 1) for _ in range(n)]
        if ttype == T_MAP:
            kt, vt, n = self.unpack(">b"), self.unpack(">b"), self.unpack(">i")
            return [(self.skip(kt, depth + 1), self.skip(vt, depth + 1)) for _ in range(n)]
        raise ValueError(f"type {ttype}")


@dataclass
class RawMsg:
    name: str
    mtype: int
    args: dict[int, tuple[int, Any]]
    raw: bytes  # the whole message as it was on the wire (with its frame)


def split_messages(data: bytes, framed: bool) -> tuple[list[RawMsg], bytes]:
    """Complete messages at the start of a byte stream, and the incomplete rest."""
    out: list[RawMsg] = []
    pos = 0
    while pos < len(data):
        r = _Reader(data, pos)
        try:
            if framed:
                flen = r.unpack(">i")
                end = r.pos + flen
                if end > len(data):
                    break
            v = r.unpack(">i")
            if v < 0:
                mtype, name = v & 0xFF, r.take(r.unpack(">i"))
            else:
                name, mtype = r.take(v), r.unpack(">b")
            r.unpack(">i")
            args = r.skip(T_STRUCT)
        except ValueError:
            break
        if framed and r.pos != end:
            raise AssertionError(f"frame of {flen} bytes holds a message of {r.pos - pos - 4}")
        out.append(RawMsg(name.decode(), mtype, args, data[pos : r.pos]))
        pos = r.pos
    return out, data[pos:]


# -- backends: Forwarder servers in the test process -------------------------------

_IDL_MODULE: Any = None


def idl() -> Any:
    """The IDL loaded by thriftpy2 (once)."""
    global _IDL_MODULE
    if _IDL_MODULE is None:
        import thriftpy2

        _IDL_MODULE = thriftpy2.load(str(IDL), module_name="slick_forwarder_thrift")
    return _IDL_MODULE


def transport_factory(framed: bool) -> Any:
    from thriftpy2.transport import TCyBufferedTransportFactory, TCyFramedTransportFactory

    return TCyFramedTransportFactory() if framed else TCyBufferedTransportFactory()


def make_client(service: Any, port: int, framed: bool, timeout_ms: int = 60000) -> Any:
    from thriftpy2.protocol import TCyBinaryProtocolFactory
    from thriftpy2.rpc import make_client as _make_client

    return _make_client(
        service,
        "127.0.0.1",
        port,
        proto_factory=TCyBinaryProtocolFactory(decode_response=False),
        trans_factory=transport_factory(framed),
        timeout=timeout_ms,
    )


class _Listener:
    """A TCP server on 127.0.0.1 that hands each connection to handle() in its own thread."""

    def __init__(self, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port: int = self.sock.getsockname()[1]
        self.lock = threading.Condition()
        self.opened = 0
        self.closed = 0
        self.errors: list[str] = []
        self.conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            with self.lock:
                self.opened += 1
                self.conns.append(conn)
                idx = self.opened
            t = threading.Thread(target=self._run, args=(conn, idx), daemon=True)
            self._threads.append(t)
            t.start()

    def _run(self, conn: socket.socket, idx: int) -> None:
        try:
            self.handle(conn, idx)
        except Exception as exc:
            with self.lock:
                self.errors.append(f"connection {idx}: {type(exc).__name__}: {exc}")
        finally:
            with self.lock:
                self.closed += 1
                self.lock.notify_all()

    def handle(self, conn: socket.socket, idx: int) -> None:
        raise NotImplementedError

    def connections(self) -> tuple[int, int]:
        with self.lock:
            return self.opened, self.closed

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        for t in [self._accepter, *self._threads]:
            t.join(timeout=10)
        for c in conns:
            c.close()


@dataclass
class Received:
    key: int
    payload: bytes
    conn: int  # which backend connection brought it


class ThriftBackend(_Listener):
    """A thriftpy2 Forwarder server: records every msg(key, payload) call."""

    def __init__(self, framed: bool) -> None:
        self.framed = framed
        self.msgs: list[Received] = []
        super().__init__()

    def handle(self, conn: socket.socket, idx: int) -> None:
        from thriftpy2.protocol import TCyBinaryProtocol
        from thriftpy2.thrift import TProcessor
        from thriftpy2.transport import TCyBufferedTransport, TCyFramedTransport, TSocket, TTransportException

        backend = self

        class Handler:
            def msg(self, key: int, payload: bytes) -> None:
                with backend.lock:
                    backend.msgs.append(Received(key, payload, idx))
                    backend.lock.notify_all()

        trans = (TCyFramedTransport if self.framed else TCyBufferedTransport)(TSocket(sock=conn))
        proto = TCyBinaryProtocol(trans, strict_read=False, decode_response=False)
        processor = TProcessor(idl().Forwarder, Handler())
        try:
            while True:
                processor.process(proto, proto)
        except TTransportException:
            pass  # the forwarder closed the connection

    def wait_count(self, n: int, timeout: float = 60) -> list[Received]:
        end = time.monotonic() + timeout
        with self.lock:
            while len(self.msgs) < n:
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"backend :{self.port} got {len(self.msgs)} messages, expected {n}")
                self.lock.wait(left)
            return list(self.msgs)

    def received(self) -> list[Received]:
        with self.lock:
            return list(self.msgs)


class RawBackend(_Listener):
    """Records the raw bytes each connection brings; reading can be paused (backpressure)."""

    def __init__(self, rcvbuf: int | None = None) -> None:
        self.data: dict[int, bytearray] = {}
        self.reading = threading.Event()
        self.reading.set()
        super().__init__(rcvbuf=rcvbuf)

    def handle(self, conn: socket.socket, idx: int) -> None:
        buf = bytearray()
        with self.lock:
            self.data[idx] = buf
        while True:
            self.reading.wait()
            chunk = conn.recv(1 << 16)
            if not chunk:
                return
            with self.lock:
                buf += chunk
                self.lock.notify_all()

    def total(self) -> int:
        with self.lock:
            return sum(len(b) for b in self.data.values())

    def wait_bytes(self, n: int, timeout: float = 60) -> bytes:
        """All bytes received (from every connection, in connection order) once there are n."""
        end = time.monotonic() + timeout
        with self.lock:
            while sum(len(b) for b in self.data.values()) < n:
                left = end - time.monotonic()
                if left <= 0:
                    got = sum(len(b) for b in self.data.values())
                    raise AssertionError(f"raw backend :{self.port} got {got} bytes, expected {n}")
                self.lock.wait(left)
            return b"".join(bytes(self.data[i]) for i in sorted(self.data))


@dataclass
class Tracker:
    """Stats deltas against a baseline."""

    read: Callable[[], dict[str, int]]
    base: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.base = self.read()

    def delta(self) -> dict[str, int]:
        now = self.read()
        return {k: now[k] - self.base.get(k, 0) for k in now}

    def wait(self, timeout: float = 30, **want: int) -> dict[str, int]:
        """Until every named counter moved by exactly want[name] (or, for *_active, equals it)."""
        last: dict[str, int] = {}

        def ok() -> bool:
            nonlocal last
            now = self.read()
            last = now
            for k, v in want.items():
                got = now[k] if k.endswith("_active") else now[k] - self.base[k]
                if got != v:
                    return False
            return True

        try:
            wait_until(ok, timeout, f"stats {want}", interval=0.1)
        except AssertionError:
            shown = {k: (last[k] if k.endswith("_active") else last[k] - self.base[k]) for k in want}
            raise AssertionError(f"stats did not reach {want} within {timeout} s: {shown} (full: {last})") from None
        return last

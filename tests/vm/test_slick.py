"""Slick: the echo server and the Thrift forwarder, kernel modules and user-process references alike.

Every behaviour test runs against both implementations through one interface
(tests/vm/slickproto.py): "kernel" loads slick_echo.ko / slick_forwarder.ko with
the contract's parameters and reads /proc/net/slick_*; "user" starts the
reference processes built from tools/slick (make, on the host, at collection:
test_slick_tools_built reports a failed build) and reads their stats on
SIGUSR1. Forwarder tests also run over both transports (unframed, framed), with
real thriftpy2 clients and thriftpy2 backends in this process. Kernel-only
tests: module parameter validation, unloading with live connections, KUnit.

Services are started on demand and kept between tests (one echo and one
forwarder at a time); stats are compared as deltas against each test's start.
"""

from __future__ import annotations

import random
import re
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.vm import slickproto as sp
from tests.vm.guest import IN_GUEST

BUILD_ERROR: str | None = None
if not IN_GUEST:
    try:
        sp.build_tools()
    except Exception as exc:  # reported by test_slick_tools_built, not at collection
        BUILD_ERROR = f"{type(exc).__name__}: {exc}"

IMPLS = ("kernel", "user")
ECHO_SIZES = (1, 2, 3, 31, 32, 127, 128, 1000, 4096, 65535, 65536)
BAD_SIZES = (0, 65537, 1 << 31, 0xFFFFFFFF)


@pytest.mark.host
def test_slick_tools_built() -> None:
    assert BUILD_ERROR is None, f"building tools/slick failed: {BUILD_ERROR}"
    stale = sp.tools_stale()
    assert not stale, f"not built or stale in {sp.TOOLS_OUT}: {stale}"


USER_BAD_FLAGS = [
    ("slick_echo_user", ["--port", "0"], "--port must be an integer in 1..65535, got '0'"),
    ("slick_echo_user", ["--port", "70000"], "--port must be an integer in 1..65535"),
    ("slick_echo_user", ["--backlog", "x"], "--backlog must be an integer"),
    ("slick_echo_user", ["--nope"], "usage:"),
    ("slick_forwarder_user", ["--framed", "2"], "--framed must be an integer in 0..1, got '2'"),
    ("slick_forwarder_user", ["--port", "9090", "--ctl-port", "9090"], "must differ"),
    ("slick_forwarder_user", ["--max-msg", "10"], "--max-msg must be an integer in 64..67108864"),
    ("slick_load", ["echo", "--size", "65537"], "--size must be an integer in 1..65536"),
    ("slick_load", ["forward", "--size", "100", "--sinks", "0"], "--sinks must be an integer in 1..64"),
    ("slick_sink", ["--port", "-1"], "--port must be an integer in 1..65535"),
]


@pytest.mark.host
@pytest.mark.parametrize(
    ("prog", "args", "message"), USER_BAD_FLAGS, ids=[" ".join([f[0], *f[1]]) for f in USER_BAD_FLAGS]
)
def test_user_tools_reject_bad_flags(prog: str, args: list[str], message: str) -> None:
    """The reference programs refuse a bad flag up front (exit 2, the reason on stderr), like modprobe does."""
    assert BUILD_ERROR is None, BUILD_ERROR
    res = subprocess.run([str(sp.TOOLS_OUT / prog), *args], capture_output=True, text=True, timeout=10)
    assert res.returncode == 2, f"{prog} {args} exited {res.returncode}: {res.stderr}"
    assert message in res.stderr, res.stderr


# -- services ----------------------------------------------------------------------


class Services:
    """At most one echo and one forwarder at a time, (re)started when a test needs another one."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.echo: sp.EchoService | None = None
        self.fwd: sp.ForwarderService | None = None

    def get_echo(self, impl: str) -> sp.EchoService:
        if self.echo and self.echo.impl != impl:
            self.stop_echo()
        if not self.echo:
            self.echo = sp.start_echo(impl, self.scratch)
        return self.echo

    def get_forwarder(self, impl: str, framed: bool) -> sp.ForwarderService:
        if self.fwd and (self.fwd.impl, self.fwd.framed) != (impl, framed):
            self.stop_forwarder()
        if not self.fwd:
            self.fwd = sp.start_forwarder(impl, framed, self.scratch)
        return self.fwd

    def stop_echo(self) -> None:
        svc, self.echo = self.echo, None
        if svc:
            svc.close()

    def stop_forwarder(self) -> None:
        svc, self.fwd = self.fwd, None
        if svc:
            svc.close()

    def stop_all(self) -> None:
        try:
            self.stop_echo()
        finally:
            self.stop_forwarder()


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    svc = Services(tmp_path_factory.mktemp("slick"))
    try:
        yield svc
    finally:
        svc.stop_all()


# Module-scoped params make pytest group the tests by implementation (fewer restarts);
# the function-scoped fixtures ask Services, so a test that stopped everything does no harm.
@pytest.fixture(scope="module", params=IMPLS)
def echo_impl(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def echo(services: Services, echo_impl: str) -> sp.EchoService:
    return services.get_echo(echo_impl)


@pytest.fixture(
    scope="module",
    params=[(impl, framed) for impl in IMPLS for framed in (False, True)],
    ids=lambda p: f"{p[0]}-{'framed' if p[1] else 'unframed'}",
)
def fwd_impl(request: pytest.FixtureRequest) -> tuple[str, bool]:
    return request.param


class Fwd:
    """A forwarder under test, with thriftpy2 clients and backends that are cleaned up after the test."""

    def __init__(self, svc: sp.ForwarderService) -> None:
        self.svc = svc
        self.framed = svc.framed
        self.thrift = sp.idl()
        self._closers: list = []
        self.ctl = self.controller()
        self.ctl.release_servers()  # nothing left from an earlier test
        self.stats = sp.Tracker(svc.stats)

    def controller(self):
        c = sp.make_client(self.thrift.Controller, self.svc.ctl_port, self.framed)
        self._closers.append(c.close)
        return c

    def client(self):
        c = sp.make_client(self.thrift.Forwarder, self.svc.port, self.framed)
        self._closers.append(c.close)
        return c

    def backend(self) -> sp.ThriftBackend:
        b = sp.ThriftBackend(self.framed)
        self._closers.append(b.close)
        return b

    def raw_backend(self, rcvbuf: int | None = None) -> sp.RawBackend:
        b = sp.RawBackend(rcvbuf)
        self._closers.append(b.close)
        return b

    def raw(self) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.svc.port), timeout=30)
        self._closers.append(s.close)
        return s

    def add(self, backend: sp.ThriftBackend | sp.RawBackend, key: int) -> None:
        self.ctl.add_server("127.0.0.1", backend.port, key)

    def close(self) -> None:
        try:
            self.ctl.release_servers()
        finally:
            for close in reversed(self._closers):
                close()


@pytest.fixture
def fwd(services: Services, fwd_impl: tuple[str, bool]) -> Iterator[Fwd]:
    f = Fwd(services.get_forwarder(*fwd_impl))
    try:
        yield f
    finally:
        f.close()


# -- echo ----------------------------------------------------------------------------


def echo_exchange(port: int, n: int, data: bytes, timeout: float = 60) -> bytes:
    """Announce n, stream data while reading, shut down the write side, read to EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(struct.pack(">I", n))
        err: list[BaseException] = []

        def send() -> None:
            try:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
            except BaseException as exc:
                err.append(exc)

        t = threading.Thread(target=send)
        t.start()
        got = bytearray()
        while chunk := s.recv(1 << 16):
            got += chunk
        t.join()
        assert not err, f"sending failed: {err[0]!r}"
        return bytes(got)


def recv_exact(s: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = s.recv(n - len(out))
        assert chunk, f"connection closed after {len(out)} of {n} bytes"
        out += chunk
    return bytes(out)


@pytest.mark.parametrize("n", ECHO_SIZES)
def test_echo_byte_exact(echo: sp.EchoService, n: int) -> None:
    rng = random.Random(n)
    length = 3 * n + max(1, n // 2) + (1 if n > 1 else 0)  # not a multiple of n (for n > 1)
    data = rng.randbytes(length)
    assert echo_exchange(echo.port, n, data) == data


@pytest.mark.parametrize("n", (1, 1000, 65536))
def test_echo_chunks_come_back_when_complete(echo: sp.EchoService, n: int) -> None:
    """A full chunk is echoed without waiting for EOF; a partial one only at EOF; the header may arrive bytewise."""
    rng = random.Random(n + 7)
    with socket.create_connection(("127.0.0.1", echo.port), timeout=30) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for b in struct.pack(">I", n):
            s.sendall(bytes([b]))
            time.sleep(0.01)
        for _ in range(2):
            chunk = rng.randbytes(n)
            s.sendall(chunk)
            assert recv_exact(s, n) == chunk
        if n > 1:
            part = rng.randbytes(n - 1)
            s.sendall(part)
            s.settimeout(0.5)
            with pytest.raises(TimeoutError):
                early = s.recv(1)
                raise AssertionError(f"got {early!r} before the chunk was complete")
            s.settimeout(30)
            s.shutdown(socket.SHUT_WR)
            assert recv_exact(s, n - 1) == part
        else:
            s.shutdown(socket.SHUT_WR)
        assert s.recv(1) == b"", "the server did not close after the final chunk"


def test_echo_concurrent_clients(echo: sp.EchoService) -> None:
    stats = sp.Tracker(echo.stats)
    rng = random.Random(32)
    jobs = []
    for _ in range(32):
        n = rng.choice(ECHO_SIZES)
        jobs.append((n, rng.randbytes(rng.randrange(1, 3 * min(n, 8192) + 100))))
    results: list[bytes | BaseException | None] = [None] * len(jobs)
    barrier = threading.Barrier(len(jobs))

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=60)
            results[i] = echo_exchange(echo.port, *jobs[i])
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    bad = [
        (i, jobs[i][0], r if isinstance(r, BaseException) else "differs")
        for i, r in enumerate(results)
        if r != jobs[i][1]
    ]
    assert not bad, f"clients with wrong echoes (index, N, problem): {bad}"
    total = sum(len(d) for _, d in jobs)
    base_active = stats.base["connections_active"]
    stats.wait(connections_total=32, bytes_echoed=total, bad_size=0, connections_active=base_active)


def test_echo_invalid_sizes_close_only_that_connection(echo: sp.EchoService) -> None:
    stats = sp.Tracker(echo.stats)
    with socket.create_connection(("127.0.0.1", echo.port), timeout=30) as good:
        good.sendall(struct.pack(">I", 100) + b"a" * 100)
        assert recv_exact(good, 100) == b"a" * 100
        for n in BAD_SIZES:
            with socket.create_connection(("127.0.0.1", echo.port), timeout=30) as bad:
                bad.sendall(struct.pack(">I", n) + b"x" * 10)
                sp.wait_closed(bad)
        good.sendall(b"b" * 150)
        assert recv_exact(good, 100) == b"b" * 100
        good.shutdown(socket.SHUT_WR)
        assert recv_exact(good, 50) == b"b" * 50
        assert good.recv(1) == b""
    stats.wait(bad_size=len(BAD_SIZES), connections_total=len(BAD_SIZES) + 1, bytes_echoed=250)


def test_echo_eof_without_data_or_inside_the_header(echo: sp.EchoService) -> None:
    stats = sp.Tracker(echo.stats)
    for prefix in (b"", b"\x00\x00", struct.pack(">I", 64)):
        with socket.create_connection(("127.0.0.1", echo.port), timeout=30) as s:
            s.sendall(prefix)
            s.shutdown(socket.SHUT_WR)
            assert s.recv(1) == b"", f"after {prefix!r} and EOF the server should close without sending"
    stats.wait(connections_total=3, bytes_echoed=0, bad_size=0, connections_active=stats.base["connections_active"])


# -- forwarder -------------------------------------------------------------------------


def payload(cid: int, seq: int, size: int, rng: random.Random) -> bytes:
    return struct.pack(">II", cid, seq) + rng.randbytes(max(0, size - 8))


SIZES = (8, 9, 100, 1000, 4096, 20000, 65536)


def test_forward_exactly_once_in_order(fwd: Fwd) -> None:
    """4 clients, keys 1..4 over 3 backends: every message arrives once, intact, in order per client and key."""
    backends = [fwd.backend() for _ in range(3)]
    route = {1: 0, 2: 1, 3: 2, 4: 0}
    for key, b in route.items():
        fwd.add(backends[b], key)
    nclients, per_client = 4, 40
    expected: dict[int, list[tuple[int, bytes]]] = {i: [] for i in range(3)}
    plans = []
    for cid in range(nclients):
        rng = random.Random(cid)
        plan = [(rng.choice(list(route)), payload(cid, seq, rng.choice(SIZES), rng)) for seq in range(per_client)]
        plans.append(plan)
        for key, p in plan:
            expected[route[key]].append((key, p))
    errors: list[BaseException] = []

    def run(plan: list[tuple[int, bytes]]) -> None:
        try:
            client = fwd.client()
            for key, p in plan:
                client.msg(key, p)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(plan,)) for plan in plans]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    for i, b in enumerate(backends):
        got = b.wait_count(len(expected[i]))
        time.sleep(0.2)
        got = b.received()
        assert sorted((r.key, r.payload) for r in got) == sorted(expected[i]), f"backend {i}: wrong messages"
        for cid in range(nclients):
            for key in route:
                seqs = [
                    struct.unpack(">I", r.payload[4:8])[0]
                    for r in got
                    if r.key == key and r.payload[:4] == struct.pack(">I", cid)
                ]
                assert seqs == sorted(seqs), f"backend {i}, client {cid}, key {key}: out of order {seqs}"
        assert not b.errors, b.errors
    total = nclients * per_client
    fwd.stats.wait(forwarded=total, unknown_key=0, malformed=0)


def test_forward_release_and_add_again(fwd: Fwd) -> None:
    a, b = fwd.backend(), fwd.backend()
    fwd.add(a, 1)
    fwd.add(b, 2)
    fwd.stats.wait(backends_active=2)
    client = fwd.client()
    rng = random.Random(5)
    first = [payload(0, i, 500, rng) for i in range(5)]
    for p in first:
        client.msg(1, p)
    assert [r.payload for r in a.wait_count(5)] == first

    fwd.ctl.release_servers()
    fwd.stats.wait(backends_active=0)
    sp.wait_until(lambda: a.connections()[1] == a.connections()[0] >= 1, 15, "backend a to see its connection closed")
    sp.wait_until(lambda: b.connections()[1] == b.connections()[0] >= 1, 15, "backend b to see its connection closed")
    client.msg(1, payload(0, 99, 100, rng))  # no route now: counted, dropped, the client stays
    fwd.stats.wait(unknown_key=1)

    fwd.add(b, 1)  # key 1 now goes to b, and a comes back under key 2
    fwd.add(a, 2)
    second = [payload(0, 100 + i, 700, rng) for i in range(5)]
    third = [payload(0, 200 + i, 300, rng) for i in range(3)]
    for p in second:
        client.msg(1, p)
    for p in third:
        client.msg(2, p)
    assert [r.payload for r in b.wait_count(5)] == second
    assert [r.payload for r in a.wait_count(8)][5:] == third
    time.sleep(0.2)
    assert len(a.received()) == 8 and len(b.received()) == 5, "a message went to a released route"
    assert a.connections()[0] >= 2, "the forwarder did not connect to backend a again"
    fwd.stats.wait(forwarded=13, unknown_key=1, malformed=0, backends_active=2)


def test_forward_add_server_replaces_route(fwd: Fwd) -> None:
    a, b = fwd.backend(), fwd.backend()
    fwd.add(a, 7)
    client = fwd.client()
    client.msg(7, b"to-a")
    a.wait_count(1)
    fwd.add(b, 7)
    client.msg(7, b"to-b")
    assert [r.payload for r in b.wait_count(1)] == [b"to-b"]
    time.sleep(0.2)
    assert [r.payload for r in a.received()] == [b"to-a"]


def test_forward_unknown_key_keeps_the_client(fwd: Fwd) -> None:
    a = fwd.backend()
    fwd.add(a, 1)
    client = fwd.client()
    client.msg(424242, b"nowhere")
    client.msg(-1, b"nowhere either")
    client.msg(1, b"after the unknown keys")
    assert [r.payload for r in a.wait_count(1)] == [b"after the unknown keys"]
    fwd.stats.wait(unknown_key=2, forwarded=1, malformed=0)


def test_forward_raw_bytes_unchanged(fwd: Fwd) -> None:
    """What a client sends is what the backend gets, byte for byte: non-strict headers,
    CALL instead of ONEWAY, and extra fields of every type are forwarded, not judged."""
    raw = fwd.raw_backend()
    fwd.add(raw, 3)
    nested = [(1, sp.T_LIST, (sp.T_MAP, [(sp.T_STRING, sp.T_I32, [(b"k", 1), (b"", -2)])])), (2, sp.T_BOOL, 1)]
    extra = [
        (3, sp.T_BOOL, 0),
        (4, sp.T_BYTE, -5),
        (5, sp.T_DOUBLE, 2.5),
        (6, sp.T_I16, 300),
        (7, sp.T_I64, -(1 << 40)),
        (8, sp.T_STRING, b"extra"),
        (9, sp.T_STRUCT, nested),
        (10, sp.T_SET, (sp.T_I64, [1, 2, 3])),
        (11, sp.T_LIST, (sp.T_STRING, [b"a", b"bc"])),
        (12, sp.T_MAP, (sp.T_I32, sp.T_STRUCT, [(1, []), (2, [(1, sp.T_I32, 9)])])),
        (13, sp.T_LIST, (sp.T_I32, [])),
        (300, sp.T_I32, 1),
    ]
    msgs = [
        sp.msg_call(3, b"strict oneway"),
        sp.msg_call(3, b"non-strict", strict=False),
        sp.msg_call(3, b"as a call", mtype=sp.M_CALL),
        sp.msg_call(3, b""),
        sp.msg_call(3, b"with every type", extra=extra),
        sp.msg_call(3, bytes(range(256)) * 40, strict=False, extra=extra[:3]),
    ]
    wire = b"".join(sp.frame(m, fwd.framed) for m in msgs)
    s = fwd.raw()
    for i in range(0, len(wire), 777):  # in pieces, split inside headers and payloads
        s.sendall(wire[i : i + 777])
    assert raw.wait_bytes(len(wire)) == wire
    time.sleep(0.2)
    assert raw.total() == len(wire)
    fwd.stats.wait(forwarded=len(msgs), malformed=0, unknown_key=0)
    s.sendall(sp.frame(sp.msg_call(3, b"still connected"), fwd.framed))
    raw.wait_bytes(len(wire) + len(sp.frame(sp.msg_call(3, b"still connected"), fwd.framed)))


def _nested(depth: int) -> bytes:
    # field 3: a struct holding a struct (field 1) ... depth levels, then the STOPs
    return b"\x0c\x00\x03" + b"\x0c\x00\x01" * (depth - 1) + b"\x00" * depth


def malformed_bytes(kind: str, framed: bool) -> tuple[bytes, bool]:
    """(bytes, then shut down the write side?) for one kind of malformed input."""
    good = sp.msg_call(1, b"p" * 50)
    head = struct.pack(">Ii", 0x80010004, 3) + b"msg" + struct.pack(">i", 0)
    if kind == "truncated":
        return sp.frame(good, framed)[:-20], True
    if kind == "random":
        return random.Random(1234).randbytes(3000), True
    if kind == "huge_length_prefix":  # a frame length (framed) or a method name length (unframed)
        return b"\x7f\xff\xff\xff" + b"\x00" * 60, False
    if kind == "huge_string":
        body = head + struct.pack(">bhi", sp.T_I32, 1, 1) + struct.pack(">bhi", sp.T_STRING, 2, 0x7FFFFFF0) + b"x" * 60
        return sp.frame(body, framed), False
    if kind == "negative_string":
        body = head + struct.pack(">bhi", sp.T_I32, 1, 1) + struct.pack(">bhi", sp.T_STRING, 2, -1) + b"\x00"
        return sp.frame(body, framed), False
    if kind == "wrong_key_type":
        return sp.frame(
            sp.enc_message(b"msg", sp.M_ONEWAY, 0, sp.enc_struct([(1, sp.T_STRING, b"1"), (2, sp.T_STRING, b"p")])),
            framed,
        ), False
    if kind == "unknown_method":
        return sp.frame(
            sp.enc_message(b"nosuch", sp.M_ONEWAY, 0, sp.enc_struct([(1, sp.T_I32, 1), (2, sp.T_STRING, b"p")])), framed
        ), False
    if kind == "bad_version":
        return sp.frame(struct.pack(">Ii", 0x80020004, 3) + good[8:], framed), False
    if kind == "too_deep":
        body = head + struct.pack(">bhi", sp.T_I32, 1, 1) + _nested(2000) + b"\x00"
        return sp.frame(body, framed), False
    if kind == "huge_list":
        body = (
            head
            + struct.pack(">bhi", sp.T_I32, 1, 1)
            + struct.pack(">bhbi", sp.T_LIST, 3, sp.T_STRUCT, 0x7FFFFFFF)
            + b"\x00" * 60
        )
        return sp.frame(body, framed), False
    raise ValueError(kind)


MALFORMED = (
    "truncated",
    "random",
    "huge_length_prefix",
    "huge_string",
    "negative_string",
    "wrong_key_type",
    "unknown_method",
    "bad_version",
    "too_deep",
    "huge_list",
)


@pytest.mark.parametrize("kind", MALFORMED)
def test_forward_malformed_closes_only_that_connection(fwd: Fwd, kind: str) -> None:
    a = fwd.backend()
    fwd.add(a, 1)
    good = fwd.client()
    good.msg(1, b"before")
    a.wait_count(1)
    data, eof = malformed_bytes(kind, fwd.framed)
    bad = fwd.raw()
    bad.sendall(data)
    if eof:
        bad.shutdown(socket.SHUT_WR)
    sp.wait_closed(bad)
    good.msg(1, b"after")
    assert [r.payload for r in a.wait_count(2)] == [b"before", b"after"]
    fwd.stats.wait(malformed=1, forwarded=2, unknown_key=0)


def test_forward_backpressure_never_drops(fwd: Fwd) -> None:
    """A backend that stops reading: the client is held back (bounded buffering), nothing is lost, order is kept."""
    raw = fwd.raw_backend(rcvbuf=65536)
    fwd.add(raw, 5)
    raw.reading.clear()
    rng = random.Random(9)
    msgs = [sp.frame(sp.msg_call(5, payload(0, i, 65536, rng)), fwd.framed) for i in range(192)]  # 12 MiB
    s = fwd.raw()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    sent = 0

    def send() -> None:
        nonlocal sent
        for m in msgs:
            s.sendall(m)
            sent += 1

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    time.sleep(2)
    held = sender.is_alive()
    sent_while_paused = sent
    raw.reading.set()
    wire = b"".join(msgs)
    got = raw.wait_bytes(len(wire), timeout=60)
    sender.join(timeout=60)
    assert held, f"the client sent all {len(msgs)} messages (12 MiB) while the backend read nothing: no backpressure"
    assert got == wire, "the backend's byte stream differs from what the client sent"
    fwd.stats.wait(forwarded=len(msgs), malformed=0, unknown_key=0)
    assert sent_while_paused < len(msgs)


def test_controller_errors(fwd: Fwd) -> None:
    from thriftpy2.thrift import TApplicationException

    a = fwd.backend()
    bad_calls = [
        ("127.0.0.1", sp.closed_port()),
        ("not-an-ip", a.port),
        ("300.1.2.3", a.port),
        ("", a.port),
        ("127.0.0.1", 0),
        ("127.0.0.1", 70000),
    ]
    for ip, port in bad_calls:
        with pytest.raises(TApplicationException) as exc:
            fwd.ctl.add_server(ip, port, 11)
        assert exc.value.type == TApplicationException.INTERNAL_ERROR, f"add_server({ip!r}, {port}): {exc.value!r}"
    client = fwd.client()
    client.msg(11, b"no route was installed")
    fwd.stats.wait(unknown_key=1)
    fwd.ctl.add_server("127.0.0.1", a.port, 11)  # the same controller connection still works
    client.msg(11, b"now there is")
    assert [r.payload for r in a.wait_count(1)] == [b"now there is"]
    fwd.stats.wait(unknown_key=1, forwarded=1, malformed=0)


def test_controller_replies_before_closing_at_eof(fwd: Fwd) -> None:
    """Requests sent before the controller's client shuts its write side down are answered."""
    call = sp.enc_message(b"release_servers", sp.M_CALL, 77, sp.enc_struct([]))
    with socket.create_connection(("127.0.0.1", fwd.svc.ctl_port), timeout=30) as s:
        s.sendall(sp.frame(call, fwd.framed) * 2)
        s.shutdown(socket.SHUT_WR)
        data = bytearray()
        while chunk := s.recv(65536):
            data += chunk
    msgs, rest = sp.split_messages(bytes(data), fwd.framed)
    assert [(m.name, m.mtype) for m in msgs] == [("release_servers", sp.M_REPLY)] * 2 and not rest, data


# -- kernel implementation only -------------------------------------------------------

BAD_PARAMS = [
    ("slick_echo", "port=0"),
    ("slick_echo", "port=70000"),
    ("slick_forwarder", "port=0"),
    ("slick_forwarder", "port=70000"),
    ("slick_forwarder", "framed=2"),
]


def dmesg() -> str:
    return sp.sh("dmesg").stdout


def dmesg_problems(text: str) -> list[str]:
    from fastsock.vm import dmesg_problems as problems

    return problems(text)


@pytest.mark.parametrize(("module", "params"), BAD_PARAMS, ids=[f"{m}-{p}" for m, p in BAD_PARAMS])
def test_kernel_module_rejects_bad_parameters(services: Services, module: str, params: str) -> None:
    services.stop_all()
    sp.sh(f"modinfo {module}")  # the module exists: its failure below is about the parameter
    before = dmesg()
    res = sp.sh(f"modprobe {module} {params}", check=False)
    assert res.returncode != 0, f"modprobe {module} {params} succeeded"
    assert not sp.module_loaded(module)
    new = dmesg()[len(before) :]
    assert not dmesg_problems(new), f"kernel log after modprobe {module} {params}:\n{new}"


def test_kernel_unload_with_live_connections(services: Services) -> None:
    services.stop_all()
    before = dmesg()
    echo = services.get_echo("kernel")
    fwd_svc = services.get_forwarder("kernel", False)
    socks = []
    for n in (10, 1000, 65536):
        s = socket.create_connection(("127.0.0.1", echo.port), timeout=30)
        s.sendall(struct.pack(">I", n) + b"z" * (n // 2))  # inside a chunk
        socks.append(s)
    backend = sp.ThriftBackend(False)
    try:
        ctl = sp.make_client(sp.idl().Controller, fwd_svc.ctl_port, False)
        ctl.add_server("127.0.0.1", backend.port, 1)
        client = sp.make_client(sp.idl().Forwarder, fwd_svc.port, False)
        client.msg(1, b"delivered")
        backend.wait_count(1)
        partial = socket.create_connection(("127.0.0.1", fwd_svc.port), timeout=30)
        partial.sendall(sp.msg_call(1, b"q" * 1000)[:500])  # inside a message
        socks.append(partial)
        sp.wait_until(lambda: echo.stats()["connections_active"] >= 3, 15, "3 live echo connections")
        t0 = time.monotonic()
        services.stop_all()
        assert time.monotonic() - t0 < 30, "unloading took more than 30 s"
        for s in socks:
            sp.wait_closed(s)
        sp.wait_until(lambda: backend.connections()[1] >= 1, 15, "the backend to see its connection closed")
        for path in ("/proc/net/slick_echo", "/proc/net/slick_forwarder"):
            assert not Path(path).exists(), f"{path} left behind"
        for port in (sp.KERNEL_ECHO_PORT, sp.KERNEL_FWD_PORT, sp.KERNEL_CTL_PORT):
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
        ctl.close()
        client.close()
    finally:
        for s in socks:
            s.close()
        backend.close()
    again = services.get_echo("kernel")  # and it loads and works again
    assert echo_exchange(again.port, 3, b"abcdefg") == b"abcdefg"
    new = dmesg()[len(before) :]
    assert not dmesg_problems(new), f"kernel log:\n{new}"


KUNIT_SUITES = ("slick_buffer", "slick_thrift")


def test_kernel_kunit() -> None:
    before = dmesg()
    sp.sh("modprobe slick_kunit", timeout=300)
    try:
        log = dmesg()[len(before) :]
        debugfs = Path("/sys/kernel/debug/kunit")
        if not debugfs.exists():
            sp.sh("mount -t debugfs none /sys/kernel/debug", check=False)
        for suite in KUNIT_SUITES:
            results = debugfs / suite / "results"
            text = results.read_text() if results.exists() else log
            found = re.findall(rf"#\s*{suite}:\s*pass:(\d+)\s+fail:(\d+)", text)
            assert found, (
                f"no KUnit summary for suite {suite} in {'debugfs' if results.exists() else 'dmesg'}:\n{text[-3000:]}"
            )
            passed, failed = (int(v) for v in found[-1])
            assert failed == 0 and passed > 0, f"{suite}: pass:{passed} fail:{failed}\n{text[-3000:]}"
        assert not dmesg_problems(log), log
    finally:
        sp.sh("modprobe -r slick_kunit", check=False)

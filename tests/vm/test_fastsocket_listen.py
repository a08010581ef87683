"""Per-CPU local listeners (TCP_FASTSOCKET_LISTEN / _LOCAL / _INFO) in the guest (2 vCPUs).

The contract is kernel/include/uapi/linux/fastsocket.h. The scenarios use one
global listener G shared by a worker process per CPU; each worker pins itself,
makes its own local listener L for G and accepts on G (tests/vm/fslisten.py).
Clients pinned to each CPU send "<cpu> <seq>" and expect "ok <worker cpu> ...".

- locality: a SYN processed on CPU c is accepted by worker c, over loopback (the
  sender's CPU processes it) and over veth with RPS (SO_INCOMING_CPU tells);
  the same scenarios on a plain shared listener are the control, only reported;
- no connection is lost when a local listener goes away (worker killed, or G
  disabled), established or half-open;
- unloading the module under load answers every connection;
- every error the header lists, with its errno; the module parameter;
- SO_REUSEPORT listeners are unaffected.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import struct
import time
from dataclasses import dataclass

import pytest

from fastsock.vm import dmesg_problems
from tests.vm import fslisten as fs
from tests.vm.guest import sh

SOL_TCP = fs.SOL_TCP

M = 50  # connections per client CPU in the locality scenarios
V4, V6 = socket.AF_INET, socket.AF_INET6
LOOPBACK = [pytest.param(V4, "127.0.0.1", id="ipv4"), pytest.param(V6, "::1", id="ipv6")]


# -- fixtures ------------------------------------------------------------------------


@pytest.fixture
def fs_module():
    """The fastsocket module loaded, listen_spawn=1 (manual); unloaded afterwards."""
    if not fs.module_loaded():
        fs.load_module()
    try:
        fs.set_listen_spawn(fs.SPAWN_MANUAL)
        yield
    finally:
        if fs.module_loaded():
            fs.unload_module()


@pytest.fixture
def no_module():
    if fs.module_loaded():
        fs.unload_module()
    yield


@pytest.fixture
def cpus() -> list[int]:
    online = fs.online_cpus()
    assert len(online) >= 2, f"these tests need 2 CPUs, the guest has {online}"
    return online


@pytest.fixture
def veth_rps(cpus):
    """Namespaces fslS (server) and fslC (client) joined by veth; RPS over every CPU on the server end."""
    sh("ip netns add fslS && ip netns add fslC")
    try:
        sh("ip link add vfsC netns fslC type veth peer name vfsS netns fslS")
        sh("ip -n fslC addr add 10.98.0.1/24 dev vfsC && ip -n fslS addr add 10.98.0.2/24 dev vfsS")
        sh("ip -n fslC addr add fd98::1/64 dev vfsC nodad && ip -n fslS addr add fd98::2/64 dev vfsS nodad")
        for ns, dev in (("fslC", "vfsC"), ("fslS", "vfsS")):
            sh(f"ip -n {ns} link set {dev} up && ip -n {ns} link set lo up")
            # A retransmission under load must not re-hash the flow (RPS would move it mid-handshake).
            sh(f"ip netns exec {ns} sysctl -q -w net.core.txrehash=0")
        mask = f"{sum(1 << c for c in cpus):x}"
        rps = "/sys/class/net/vfsS/queues/rx-0/rps_cpus"
        got = sh(f"ip netns exec fslS sh -c 'echo {mask} > {rps} && cat {rps}'").stdout.strip()
        assert int(got.replace(",", ""), 16) == int(mask, 16), f"rps_cpus is {got}, wanted {mask}"
        yield {V4: ("10.98.0.2",), V6: ("fd98::2",)}
    finally:
        sh("ip netns del fslS; ip netns del fslC", check=False)


RAW_PEER = "10.77.0.5"


@pytest.fixture
def raw_route():
    """Route RAW_PEER to lo: the server's packets to it are captured there and then dropped."""
    sh(f"ip route add {RAW_PEER}/32 dev lo")
    try:
        yield RAW_PEER
    finally:
        sh(f"ip route del {RAW_PEER}/32 dev lo", check=False)


# -- the scenario ------------------------------------------------------------------------


@dataclass
class Run:
    conns: list[dict]  # one per accepted connection (worker events)
    clients: dict[int, dict]  # cpu -> client summary
    workers: dict[int, list[dict]]  # cpu -> all worker events
    counters: dict[int, dict[str, int]] | None  # /proc/net/fastsocket delta over the client phase

    def share(self, key: str = "client_cpu") -> float:
        return sum(c["worker_cpu"] == c[key] for c in self.conns) / max(len(self.conns), 1)


def _ns(name: str | None):
    return fs.netns(name) if name else contextlib.nullcontext()


def run_scenario(
    family: int,
    addr: str,
    cpus: list[int],
    *,
    fastsocket: bool,
    per_cpu: int = M,
    server_ns: str | None = None,
    client_ns: str | None = None,
    counters: bool = False,
) -> Run:
    """G (enabled when fastsocket) + a worker per CPU; a client per CPU opens per_cpu connections."""
    with contextlib.ExitStack() as stack, fs.processes() as procs:
        with _ns(server_ns):
            g = stack.enter_context(fs.listener(family, addr))
            if fastsocket:
                fs.enable(g)
            workers = {c: fs.start_worker(g, c, local=fastsocket) for c in cpus}
            procs.extend(workers.values())
        for w in workers.values():
            w.ready()
        if fastsocket:
            i = fs.info(g)
            assert (i.flags, i.nr_local) == (fs.FASTSOCKET_INFO_ENABLED, len(cpus)), i
        port = g.getsockname()[1]
        before = fs.read_counters() if counters else None
        with _ns(client_ns):
            clients = {c: fs.start_client(family, addr, port, c, count=per_cpu) for c in cpus}
            procs.extend(clients.values())
        for c in clients.values():
            c.finish(timeout=150)
        after = fs.read_counters() if counters else None
        for w in workers.values():
            w.finish(timeout=30)
        return Run(
            conns=[e for w in workers.values() for e in w.conns()],
            clients={cpu: c.summary() for cpu, c in clients.items()},
            workers={cpu: w.events for cpu, w in workers.items()},
            counters=fs.counter_delta(before, after) if counters else None,
        )


def assert_all_answered(run: Run, cpus: list[int], per_cpu: int = M) -> None:
    for cpu, s in run.clients.items():
        assert s["ok"] == per_cpu and not s["errors"], f"client on CPU {cpu}: {s}"
    bad = [e for evs in run.workers.values() for e in evs if e["event"] in ("conn_error", "accept_error", "garbage")]
    assert not bad, f"worker errors: {bad}"
    got = sorted((c["client_cpu"], c["seq"]) for c in run.conns)
    assert got == sorted((cpu, s) for cpu in cpus for s in range(per_cpu)), "accepted connections != sent ones"


def _summary(run: Run) -> dict:
    per_worker = {cpu: sum(c["worker_cpu"] == cpu for c in run.conns) for cpu in run.workers}
    return {"conns": len(run.conns), "per_worker": per_worker}


# -- 1. locality over loopback ------------------------------------------------------------


@pytest.mark.parametrize(("family", "addr"), LOOPBACK)
def test_loopback_connection_is_accepted_by_the_senders_cpu_worker(fs_module, cpus, family, addr) -> None:
    run = run_scenario(family, addr, cpus, fastsocket=True, counters=True)
    fs.report(f"loopback-{family.name}-fastsocket", {"share": run.share(), **_summary(run), "counters": run.counters})
    assert_all_answered(run, cpus)
    wrong = [c for c in run.conns if c["worker_cpu"] != c["client_cpu"]]
    assert not wrong, f"{len(wrong)}/{len(run.conns)} connections accepted by another CPU's worker: {wrong[:10]}"
    assert all(c["incoming_cpu"] == c["worker_cpu"] for c in run.conns), run.conns
    for cpu in cpus:
        assert run.counters[cpu]["listen_local"] >= M, f"listen_local on CPU {cpu} did not count: {run.counters}"


@pytest.mark.parametrize(("family", "addr"), LOOPBACK)
def test_loopback_control_shared_listener(no_module, cpus, family, addr) -> None:
    """Stock behaviour, for comparison: every connection accepted, by whichever worker wins."""
    run = run_scenario(family, addr, cpus, fastsocket=False)
    fs.report(f"loopback-{family.name}-control", {"share": run.share(), **_summary(run)})
    assert_all_answered(run, cpus)
    # the premise of the locality test: a loopback SYN is processed on the sender's CPU
    moved = [c for c in run.conns if c["incoming_cpu"] != c["client_cpu"]]
    assert not moved, f"loopback connections processed on another CPU than the sender's: {moved[:10]}"


# -- 2. locality over veth with RPS ---------------------------------------------------------


@pytest.mark.parametrize("family", [V4, V6], ids=["ipv4", "ipv6"])
def test_veth_rps_connection_is_accepted_by_the_syn_cpu_worker(fs_module, cpus, veth_rps, family) -> None:
    (addr,) = veth_rps[family]
    run = run_scenario(family, addr, cpus, fastsocket=True, server_ns="fslS", client_ns="fslC")
    fs.report(f"veth-rps-{family.name}-fastsocket", {"share": run.share("incoming_cpu"), **_summary(run)})
    assert_all_answered(run, cpus)
    wrong = [c for c in run.conns if c["incoming_cpu"] != c["worker_cpu"]]
    assert not wrong, f"{len(wrong)}/{len(run.conns)} connections accepted off their SYN's CPU: {wrong[:10]}"
    # RPS steered some SYNs away from the sender's CPU (else this is the loopback test again)
    assert any(c["incoming_cpu"] != c["client_cpu"] for c in run.conns), "RPS never moved a connection"


def test_veth_rps_control_shared_listener(no_module, cpus, veth_rps) -> None:
    (addr,) = veth_rps[V4]
    run = run_scenario(V4, addr, cpus, fastsocket=False, server_ns="fslS", client_ns="fslC")
    fs.report(f"veth-rps-{V4.name}-control", {"share": run.share("incoming_cpu"), **_summary(run)})
    assert_all_answered(run, cpus)
    moved = sum(c["incoming_cpu"] != c["client_cpu"] for c in run.conns)
    assert moved, "RPS on the server's veth never moved a connection to another CPU"


# -- 3. a local listener goes away: nothing is lost --------------------------------------------


def _count_sockets(state: str, port: int) -> int:
    out = sh(f"ss -Htn state {state} '( sport = :{port} )'").stdout
    return len(out.splitlines())


def _wait(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.05)


@pytest.mark.parametrize("how", ["sigkill", "disable"])
def test_queued_connections_survive_their_local_listener(fs_module, cpus, raw_route, how) -> None:
    """Worker 1 makes its local listener and never accepts; CPU 1's connections queue there,
    established (a client) and half-open (a raw SYN whose final ACK is held back). Then worker 1
    is SIGKILLed (or G is disabled): worker 0 must accept all of them through G, and every client
    gets its reply.
    """
    k = 8
    hello = b"1 999\n"  # what the half-open connection sends with its final ACK
    with contextlib.ExitStack() as stack, fs.processes() as procs:
        g = stack.enter_context(fs.listener(V4, "127.0.0.1"))
        port = g.getsockname()[1]
        fs.enable(g)
        w0 = fs.start_worker(g, 0, local=True)
        w1 = fs.start_worker(g, 1, local=True, mode="hold")
        procs += [w0, w1]
        w0.ready()
        w1.ready()
        assert fs.info(g).nr_local == 2
        before = fs.read_counters()

        client = fs.start_client(V4, "127.0.0.1", port, 1, count=k, mode="hold", reply_timeout=60)
        procs.append(client)
        opened = client.wait_event(lambda e: e["event"] == "opened", 60)
        assert opened["n"] == k, opened
        _wait(lambda: _count_sockets("established", port) == k, 10, f"{k} server-side children")

        peer = fs.RawPeer(raw_route, 40000 + os.getpid() % 20000, "127.0.0.1", port)
        stack.callback(peer.close)
        with fs.pinned(1):
            peer.syn()
        assert _count_sockets("syn-recv", port) == 1, "the raw SYN left no request socket"

        time.sleep(0.5)  # worker 0 is serving: give it the chance to (wrongly) take CPU 1's connections
        w0.drain()
        early = [c for c in w0.conns() if c.get("client_cpu") == 1]
        assert not early, f"worker 0 accepted CPU 1's connections while CPU 1 had its local listener: {early}"
        queued = fs.counter_delta(before, fs.read_counters())
        assert queued[1]["listen_local"] >= k + 1, f"CPU 1's connections did not go local: {queued}"

        if how == "sigkill":
            w1.kill()
            assert w1.returncode == -9
            assert fs.info(g).nr_local == 1
        else:
            fs.enable(g, 0)
            i = fs.info(g)
            assert (i.flags, i.nr_local) == (0, 0), i

        with fs.pinned(1):
            peer.ack(hello)
        w0.wait_until(lambda evs: sum(e.get("client_cpu") == 1 for e in evs if e["event"] == "conn") == k + 1, 30)
        client.finish(timeout=90)
        s = client.summary()
        assert s["ok"] == k and not s["errors"], f"clients lost connections: {s}"
        assert s["replies"] == {"0": k}, s
        after = fs.read_counters()
        peer.reset(len(hello))
        w0.finish(timeout=30)
        bad = [e for e in w0.events if e["event"] in ("conn_error", "accept_error")]
        assert not bad, bad
        delta = fs.counter_delta(before, after)
        fs.report(f"migrate-{how}", {"counters": delta})
        assert fs.counter_total(delta, "migrated") >= k + 1, f"migrations not counted: {delta}"


# -- 4. unloading the module under load ---------------------------------------------------------


def test_module_unload_under_load(fs_module, cpus) -> None:
    dmesg_before = sh("dmesg").stdout.splitlines()
    with contextlib.ExitStack() as stack, fs.processes() as procs:
        g = stack.enter_context(fs.listener(V4, "127.0.0.1"))
        port = g.getsockname()[1]
        fs.enable(g)
        workers = [fs.start_worker(g, c, local=True) for c in cpus]
        procs += workers
        for w in workers:
            w.ready()
        clients = [fs.start_client(V4, "127.0.0.1", port, c, duration=5.0, max_errors=20) for c in cpus]
        procs += clients
        for c in clients:
            c.ready()
        time.sleep(2.0)
        t0 = time.monotonic()
        fs.unload_module()
        unload_s = time.monotonic() - t0
        assert not fs.PROC.exists(), "/proc/net/fastsocket outlived the module"
        for c in clients:
            c.finish(timeout=60)
        sums = [c.summary() for c in clients]
        assert all(s["ok"] > 0 and not s["errors"] for s in sums), f"connections failed around the unload: {sums}"
        assert fs.errno_of(fs.info, g) == errno.ENOPROTOOPT
        # G still accepts, served by the workers (their local listeners are gone)
        after = fs.start_client(V4, "127.0.0.1", port, cpus[0], count=5)
        procs.append(after)
        after.finish(timeout=60)
        assert after.summary()["ok"] == 5 and not after.summary()["errors"], after.summary()
        for w in workers:
            w.finish(timeout=30)
        bad = [e for w in workers for e in w.events if e["event"] in ("conn_error", "accept_error")]
        assert not bad, bad
        accepted = sum(len(w.conns()) for w in workers)
        assert accepted == sum(s["ok"] for s in sums) + 5
        fs.report("unload-under-load", {"connections": accepted, "unload_s": round(unload_s, 2)})
    new = sh("dmesg").stdout.splitlines()[len(dmesg_before) :]
    assert not dmesg_problems("\n".join(new)), "\n".join(new)


# -- 5. errors ------------------------------------------------------------------------------------


def _sock(family: int = V4, kind: int = socket.SOCK_STREAM) -> socket.socket:
    return socket.socket(family, kind)


def _local_errno(g, cpu: int, family: int = V4, local: socket.socket | None = None) -> int:
    with contextlib.ExitStack() as stack:
        if local is None:
            local = stack.enter_context(_sock(family))
        return fs.errno_of(fs.make_local, local, g, cpu)


def test_listen_option_errors(fs_module) -> None:
    with contextlib.ExitStack() as stack:
        fresh = stack.enter_context(_sock())
        assert fs.errno_of(fs.enable, fresh) == errno.EINVAL, "not listening (fresh)"
        bound = stack.enter_context(_sock())
        bound.bind(("127.0.0.1", 0))
        assert fs.errno_of(fs.enable, bound) == errno.EINVAL, "not listening (bound)"
        # A UDP socket never reaches TCP's option code: SOL_TCP options are unknown to it.
        udp = stack.enter_context(_sock(V4, socket.SOCK_DGRAM))
        assert fs.errno_of(fs.enable, udp) == errno.ENOPROTOOPT, "UDP"
        g = stack.enter_context(fs.listener(V4, "127.0.0.1"))
        for raw in (b"", b"\x01", b"\x01\x00"):
            e = fs.errno_of(g.setsockopt, fs.SOL_TCP, fs.TCP_FASTSOCKET_LISTEN, raw)
            assert e == errno.EINVAL, f"optlen {len(raw)}: {fs.ename(e)}"
        for value in (7, 2, -1):
            assert fs.errno_of(fs.enable, g, value) == errno.EINVAL, f"value {value}"
        assert fs.info(g) == fs.Info(0, -1, 0, 0), "a rejected call changed G"
        fs.enable(g)
        assert fs.info(g) == fs.Info(fs.FASTSOCKET_INFO_ENABLED, -1, 0, 0)


def test_local_option_errors(fs_module, cpus) -> None:
    with contextlib.ExitStack() as stack:
        g = stack.enter_context(fs.listener(V4, "127.0.0.1"))
        fs.enable(g)
        plain = stack.enter_context(fs.listener(V4, "127.0.0.1"))
        udp = stack.enter_context(_sock(V4, socket.SOCK_DGRAM))
        r, w = os.pipe()
        stack.callback(os.close, r)
        stack.callback(os.close, w)

        assert _local_errno(-1, 0) == errno.EBADF
        assert _local_errno(r, 0) == errno.ENOTSOCK
        assert _local_errno(plain, 0) == errno.EINVAL, "G not enabled"
        assert _local_errno(udp, 0) == errno.EINVAL, "G a UDP socket"
        assert _local_errno(g, 99) == errno.EINVAL, "cpu 99"
        assert _local_errno(g, -2) == errno.EINVAL, "cpu -2"
        with contextlib.closing(_sock()) as short:
            e = fs.errno_of(short.setsockopt, fs.SOL_TCP, fs.TCP_FASTSOCKET_LOCAL, struct.pack("i", g.fileno()))
            assert e == errno.EINVAL, f"optlen 4: {fs.ename(e)}"
        with fs.pinned(set(cpus)):
            assert _local_errno(g, -1) == errno.EINVAL, "cpu -1 from an unpinned caller (manual mode)"
        assert _local_errno(g, 0, family=V6) == errno.EAFNOSUPPORT
        sh("ip netns add fslX")
        try:
            with fs.netns("fslX"):
                other = stack.enter_context(_sock())
            assert _local_errno(g, 0, local=other) == errno.EXDEV
        finally:
            sh("ip netns del fslX", check=False)
        assert fs.info(g).nr_local == 0, "a rejected call left a local listener"

        l0 = stack.enter_context(_sock())
        fs.make_local(l0, g, 0)
        assert fs.info(l0) == fs.Info(fs.FASTSOCKET_INFO_LOCAL, 0, 0, 0)
        assert fs.info(g) == fs.Info(fs.FASTSOCKET_INFO_ENABLED, -1, 1, 0)
        assert _local_errno(g, 0) == errno.EBUSY, "second local listener for CPU 0"
        assert _local_errno(g, 1, local=l0) == errno.EINVAL, "L already a local listener"
        bound = stack.enter_context(_sock())
        bound.bind(("127.0.0.1", 0))
        assert _local_errno(g, 1, local=bound) == errno.EINVAL, "L already bound"

        l1 = stack.enter_context(_sock())
        with fs.pinned(1):
            fs.make_local(l1, g, -1)
        assert fs.info(l1) == fs.Info(fs.FASTSOCKET_INFO_LOCAL, 1, 0, 0), "cpu -1 from a caller pinned to CPU 1"
        assert fs.info(g).nr_local == 2
        with contextlib.closing(_sock()) as s:
            assert fs.info(s) == fs.Info(0, -1, 0, 0), "plain TCP socket"
        assert fs.info(plain) == fs.Info(0, -1, 0, 0), "plain listener"
        l0.close()
        assert fs.info(g).nr_local == 1, "closing L0 did not detach it"


def test_listen_spawn_parameter(fs_module, cpus) -> None:
    assert fs.get_listen_spawn() == fs.SPAWN_MANUAL
    assert fs.errno_of(fs.set_listen_spawn, 5) == errno.EINVAL
    assert fs.get_listen_spawn() == fs.SPAWN_MANUAL, "a rejected write changed listen_spawn"
    with contextlib.ExitStack() as stack:
        g = stack.enter_context(fs.listener(V4, "127.0.0.1"))
        fs.enable(g)
        g2 = stack.enter_context(fs.listener(V4, "127.0.0.1"))
        try:
            fs.set_listen_spawn(fs.SPAWN_OFF)
            assert fs.get_listen_spawn() == fs.SPAWN_OFF
            assert fs.errno_of(fs.enable, g2) == errno.EOPNOTSUPP, "LISTEN with listen_spawn=0"
            assert _local_errno(g, 0) == errno.EOPNOTSUPP, "LOCAL with listen_spawn=0"
            # (whether listen_spawn=0 also disables G is not in the contract: G is not reused below)
            fs.set_listen_spawn(fs.SPAWN_AUTO)
            g3 = stack.enter_context(fs.listener(V4, "127.0.0.1"))
            fs.enable(g3)
            auto = stack.enter_context(_sock())
            with fs.pinned(set(cpus)):
                fs.make_local(auto, g3, -1)
            i = fs.info(auto)
            assert i.flags == fs.FASTSOCKET_INFO_LOCAL and i.cpu in cpus, f"automatic mode, unpinned: {i}"
        finally:
            fs.set_listen_spawn(fs.SPAWN_MANUAL)


def test_disable_then_enable_again(fs_module, cpus) -> None:
    with contextlib.ExitStack() as stack:
        g = stack.enter_context(fs.listener(V4, "127.0.0.1"))
        fs.enable(g)
        locals_ = [stack.enter_context(_sock()) for _ in cpus]
        for c, s in zip(cpus, locals_, strict=True):
            fs.make_local(s, g, c)
        assert fs.info(g).nr_local == len(cpus)
        fs.enable(g, 0)
        assert fs.info(g) == fs.Info(0, -1, 0, 0)
        assert _local_errno(g, 0) == errno.EINVAL, "LOCAL on a disabled G"
        fs.enable(g)
        again = stack.enter_context(_sock())
        fs.make_local(again, g, 0)
        assert fs.info(g).nr_local == 1
        # G still serves a connection from CPU 0, queued on the new local listener. Wait on L:
        # poll on G sees only G's own queue (accept on G serves L's first).
        with fs.pinned(0), socket.create_connection(("127.0.0.1", g.getsockname()[1]), timeout=10) as c:
            ready, _, _ = select.select([again], [], [], 10)
            assert ready, "the connection never reached CPU 0's local listener"
            conn, _ = g.accept()
            with conn:
                assert conn.getpeername() == c.getsockname()


# Options set on G before its local listeners spawn, as servers set them after listen():
# (name, level, option, value); a connection accepted through a local listener must carry what
# one accepted from G does. TCP_QUICKACK 0 is HAProxy's default on HTTP listeners.
INHERITED = [
    ("QUICKACK", SOL_TCP, socket.TCP_QUICKACK, 0),
    ("NODELAY", SOL_TCP, socket.TCP_NODELAY, 1),
    ("KEEPALIVE", socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
    ("KEEPIDLE", SOL_TCP, socket.TCP_KEEPIDLE, 77),
    ("USER_TIMEOUT", SOL_TCP, socket.TCP_USER_TIMEOUT, 4321),
    ("THIN_LINEAR_TIMEOUTS", SOL_TCP, 16, 1),
    ("INQ", SOL_TCP, 36, 1),
    ("TX_DELAY", SOL_TCP, 37, 500),  # us
]
TCP_FASTOPEN = 23


def _accepted_options(local: bool) -> tuple[dict[str, int], int]:
    """The INHERITED options of a connection accepted on G (through CPU 0's local listener
    when local), and the TCP_FASTOPEN queue length of the socket the connection queued on."""
    with contextlib.ExitStack() as stack:
        g = stack.enter_context(fs.listener(V4, "127.0.0.1"))
        for _, level, opt, value in INHERITED:
            g.setsockopt(level, opt, value)
        g.setsockopt(SOL_TCP, TCP_FASTOPEN, 5)
        queue = g
        if local:
            fs.enable(g)
            queue = stack.enter_context(_sock())
            fs.make_local(queue, g, 0)
        with fs.pinned(0), socket.create_connection(("127.0.0.1", g.getsockname()[1]), timeout=10):
            ready, _, _ = select.select([queue], [], [], 10)
            assert ready, "the connection never reached the listener it should queue on"
            conn, _ = g.accept()
            with conn:
                got = {name: conn.getsockopt(level, opt) for name, level, opt, _ in INHERITED}
                return got, queue.getsockopt(SOL_TCP, TCP_FASTOPEN)


def test_accepted_connections_carry_the_listeners_options(fs_module, cpus) -> None:
    from_g, g_tfo = _accepted_options(local=False)
    assert from_g == {name: value for name, _, _, value in INHERITED}, "the control: stock inheritance"
    from_local, local_tfo = _accepted_options(local=True)
    assert from_local == from_g
    assert local_tfo == g_tfo == 5, "TCP_FASTOPEN queue of the local listener"


def test_options_without_module(no_module) -> None:
    with contextlib.ExitStack() as stack:
        g = stack.enter_context(fs.listener(V4, "127.0.0.1"))
        assert fs.errno_of(fs.enable, g) == errno.ENOPROTOOPT
        assert _local_errno(g, 0) == errno.ENOPROTOOPT
        assert fs.errno_of(fs.info, g) == errno.ENOPROTOOPT


# -- 6. SO_REUSEPORT ----------------------------------------------------------------------------------


def test_reuseport_listeners_share_a_port_with_the_module_loaded(fs_module, cpus) -> None:
    n = 40
    with contextlib.ExitStack() as stack:
        # fastsocket active elsewhere: an enabled listener with a local listener per CPU
        g = stack.enter_context(fs.listener(V4, "127.0.0.1"))
        fs.enable(g)
        for c in cpus:
            fs.make_local(stack.enter_context(_sock()), g, c)
        rp = []
        for _ in range(2):
            s = stack.enter_context(_sock())
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind(("127.0.0.1", rp[0].getsockname()[1] if rp else 0))
            s.listen(n)
            s.setblocking(False)
            rp.append(s)
        port = rp[0].getsockname()[1]
        clients = []
        for i in range(n):
            with fs.pinned(cpus[i % len(cpus)]):
                clients.append(stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=10)))
        counts = [0, 0]
        deadline = time.monotonic() + 20
        while sum(counts) < n and time.monotonic() < deadline:
            for idx, s in enumerate(rp):
                with contextlib.suppress(BlockingIOError):
                    conn, _ = s.accept()
                    conn.close()
                    counts[idx] += 1
        fs.report("reuseport", {"counts": counts})
        assert sum(counts) == n, f"accepted {counts} of {n}"
        assert all(counts), f"one reuseport listener got nothing: {counts}"

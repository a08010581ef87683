"""Receive Flow Deliver: CPU-encoded source ports and port-based receive steering.

With fastsocket.ko loaded, a TCP socket that asked for RFD (TCP_FASTSOCKET_RFD, or
every TCP socket with rfd_ports=2) gets a local port p with p & mask == c, c being
the CPU it connects (or binds) on and mask = roundup_pow_of_two(nr_cpu_ids) - 1;
with steering on (rfd_steer=1, or 2, the default, once a socket asked for RFD) the
packets of such active connections are processed on CPU
dport & mask, whatever RPS would have picked. The tests connect from a client
namespace to a server namespace over veth, with RPS spreading flows over every CPU
on both ends, so a reply lands on the connecting CPU only if the kernel steers it.
The stock kernel (module unloaded) runs as the control in the same guest.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.vm import fslisten as fs
from tests.vm.guest import sh

TCP_FASTSOCKET_RFD = 0x4656
TCP_FASTSOCKET_RFD_TASK = 0x4657
FASTSOCKET_INFO_RFD = 1 << 2
IP_BIND_ADDRESS_NO_PORT = 24
IP_LOCAL_PORT_RANGE = 51
PARAMS = Path("/sys/module/fastsocket/parameters")
V4, V6 = socket.AF_INET, socket.AF_INET6
PER_CPU = 24  # connections per CPU per run
PORT = 8600


def set_param(name: str, value: int | str) -> None:
    """Write a module parameter; raises OSError with the kernel's errno."""
    fd = os.open(PARAMS / name, os.O_WRONLY)
    try:
        os.write(fd, f"{value}\n".encode())
    finally:
        os.close(fd)


def get_param(name: str) -> int:
    return int((PARAMS / name).read_text())


def cpu_mask() -> int:
    ncpu = int(Path("/sys/devices/system/cpu/possible").read_text().strip().split("-")[-1]) + 1
    p = 1
    while p < ncpu:
        p <<= 1
    return p - 1


def rfd_socket(family: int, on: bool = True) -> socket.socket:
    s = socket.socket(family, socket.SOCK_STREAM)
    if on:
        s.setsockopt(socket.IPPROTO_TCP, TCP_FASTSOCKET_RFD, 1)
    return s


def local_port(s: socket.socket) -> int:
    return s.getsockname()[1]


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def cpus() -> list[int]:
    online = fs.online_cpus()
    assert len(online) >= 2, f"these tests need 2 CPUs, the guest has {online}"
    return online


@pytest.fixture
def module():
    """fastsocket.ko loaded with its defaults (rfd_ports=1, rfd_steer=2); unloaded afterwards."""
    if fs.module_loaded():
        fs.unload_module()
    fs.load_module()
    try:
        assert get_param("rfd_ports") == 1 and get_param("rfd_steer") == 2
        yield
    finally:
        if fs.module_loaded():
            fs.unload_module()


@pytest.fixture
def no_module():
    if fs.module_loaded():
        fs.unload_module()
    yield


@dataclass
class Veth:
    server: dict[int, str]  # family -> server address (namespace rfdS)
    client_ns: str = "rfdC"
    server_ns: str = "rfdS"


@pytest.fixture
def veth(cpus) -> Iterator[Veth]:
    """Namespaces rfdC (client) and rfdS (server) joined by veth, RPS over every CPU on both ends."""
    sh("ip netns add rfdS && ip netns add rfdC")
    try:
        sh("ip link add vrC netns rfdC type veth peer name vrS netns rfdS")
        sh("ip -n rfdC addr add 10.97.0.1/24 dev vrC && ip -n rfdS addr add 10.97.0.2/24 dev vrS")
        sh("ip -n rfdC addr add fd97::1/64 dev vrC nodad && ip -n rfdS addr add fd97::2/64 dev vrS nodad")
        mask = f"{sum(1 << c for c in cpus):x}"
        for ns, dev in (("rfdC", "vrC"), ("rfdS", "vrS")):
            sh(f"ip -n {ns} link set {dev} up && ip -n {ns} link set lo up")
            sh(f"ip netns exec {ns} sysctl -q -w net.core.txrehash=0")  # no re-hash on retransmission
            rps = f"/sys/class/net/{dev}/queues/rx-0/rps_cpus"
            got = sh(f"ip netns exec {ns} sh -c 'echo {mask} > {rps} && cat {rps}'").stdout.strip()
            assert int(got.replace(",", ""), 16) == int(mask, 16), f"{dev} rps_cpus is {got}, wanted {mask}"
        yield Veth(server={V4: "10.97.0.2", V6: "fd97::2"})
    finally:
        sh("ip netns del rfdS; ip netns del rfdC", check=False)


class ReplyServer:
    """Threaded TCP server: reads one line, answers 64 bytes, waits for the peer to close."""

    def __init__(self, family: int, addr: str, port: int, ns: str) -> None:
        with fs.netns(ns):
            self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((addr, port))
        self.sock.listen(512)
        self.errors: list[str] = []
        self.served = 0
        self._stop = False
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(30)
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = conn.recv(64)
                if not chunk:
                    raise ConnectionError("peer closed before its request")
                buf += chunk
            conn.sendall(b"r" * 63 + b"\n")
            self.served += 1
            conn.recv(1)  # until the client closes
        except OSError as exc:
            self.errors.append(repr(exc))
        finally:
            conn.close()

    def close(self) -> None:
        self._stop = True
        self.sock.close()
        self._thread.join(5)


@contextlib.contextmanager
def reply_server(family: int, addr: str, port: int, ns: str = "rfdS") -> Iterator[ReplyServer]:
    srv = ReplyServer(family, addr, port, ns)
    try:
        yield srv
    finally:
        srv.close()
    assert not srv.errors, f"server errors: {srv.errors[:5]}"


@dataclass
class Conn:
    cpu: int
    port: int
    incoming_cpu: int


def request(family: int, addr: str, port: int, ns: str, rfd: bool) -> Conn:
    """Connect from the calling (pinned) thread in namespace ns, one request/reply."""
    with fs.netns(ns):
        s = rfd_socket(family, rfd)
    try:
        s.settimeout(30)
        s.connect((addr, port))
        s.sendall(b"q\n")
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = s.recv(128)
            assert chunk, "server closed before replying"
            reply += chunk
        assert reply == b"r" * 63 + b"\n"
        return Conn(os.sched_getaffinity(0).pop(), local_port(s), s.getsockopt(socket.SOL_SOCKET, fs.SO_INCOMING_CPU))
    finally:
        s.close()


def run_clients(family: int, addr: str, port: int, cpus: list[int], rfd: bool, ns: str = "rfdC") -> list[Conn]:
    conns: list[Conn] = []
    for c in cpus:
        with fs.pinned(c):
            conns.extend(request(family, addr, port, ns, rfd) for _ in range(PER_CPU))
    return conns


def init_counters() -> dict[str, int]:
    """/proc/net/fastsocket of the initial namespace, summed over CPUs; empty without the module."""
    path = Path("/proc/1/net/fastsocket")
    if not path.exists():
        return {}
    rows = fs.read_counters(path.read_text())
    return {k: sum(r[k] for r in rows.values()) for k in next(iter(rows.values()))}


def settle() -> None:
    """Let the last packets of connections just closed (the servers' FINs) arrive before counting."""
    time.sleep(1)


def share(conns: list[Conn]) -> float:
    return sum(c.incoming_cpu == c.cpu for c in conns) / len(conns)


# -- 1. locality of active connections -------------------------------------------------------


@pytest.mark.parametrize("family", [V4, V6], ids=["ipv4", "ipv6"])
def test_replies_are_processed_on_the_connecting_cpu(cpus, veth, family) -> None:
    """Module loaded: every port encodes its CPU and every reply lands there; stock (control): about 1/N."""
    addr = veth.server[family]
    mask = cpu_mask()
    with reply_server(family, addr, PORT):
        if fs.module_loaded():
            fs.unload_module()
        stock = run_clients(family, addr, PORT, cpus, rfd=False)
        fs.load_module()
        try:
            before = fs.read_counters()
            rfd = run_clients(family, addr, PORT, cpus, rfd=True)
            delta = fs.counter_delta(before, fs.read_counters())
        finally:
            fs.unload_module()
    fs.report(
        f"rfd-veth-{family.name}",
        {"stock_share": share(stock), "rfd_share": share(rfd), "connections": len(rfd), "counters": delta},
    )
    bad_ports = [(c.cpu, c.port) for c in rfd if c.port & mask != c.cpu]
    assert not bad_ports, f"source ports not encoding their CPU (cpu, port): {bad_ports[:10]}"
    off_cpu = [(c.cpu, c.incoming_cpu) for c in rfd if c.incoming_cpu != c.cpu]
    assert not off_cpu, f"replies processed off the connecting CPU (cpu, incoming): {off_cpu[:10]}"
    assert share(stock) < 0.9, f"control: RPS put {share(stock):.0%} of replies on the connecting CPU; no spreading"
    assert fs.counter_total(delta, "rx_active") >= len(rfd), delta
    assert fs.counter_total(delta, "port_scan") >= len(rfd), delta
    assert fs.counter_total(delta, "port_fallback") == 0, delta


def test_steering_can_be_switched_off_at_run_time(cpus, veth, module) -> None:
    addr = veth.server[V4]
    with reply_server(V4, addr, PORT):
        set_param("rfd_steer", 0)
        before = fs.read_counters()
        off = run_clients(V4, addr, PORT, cpus, rfd=True)
        delta_off = fs.counter_delta(before, fs.read_counters())
        set_param("rfd_steer", 1)
        on = run_clients(V4, addr, PORT, cpus, rfd=True)
    assert fs.counter_total(delta_off, "rx_active") == 0, delta_off
    assert share(off) < 0.9, f"steering off, yet {share(off):.0%} of replies on the connecting CPU"
    assert share(on) == 1.0, [(c.cpu, c.incoming_cpu) for c in on if c.cpu != c.incoming_cpu]
    assert all(c.port & cpu_mask() == c.cpu for c in off + on)


def steering() -> bool:
    """Is receive steering in effect (rps_needed held), per /proc/net/fastsocket?"""
    lines = Path("/proc/net/fastsocket").read_text().splitlines()
    return {"rfd_steering 0": False, "rfd_steering 1": True}[next(x for x in lines if x.startswith("rfd_steering "))]


def test_automatic_steering_starts_with_the_first_rfd_socket(cpus, veth, module) -> None:
    addr = veth.server[V4]
    with reply_server(V4, addr, PORT):
        before = fs.read_counters()
        plain = run_clients(V4, addr, PORT, cpus, rfd=False)
        delta_plain = fs.counter_delta(before, fs.read_counters())
        assert not steering(), "steering on before any socket asked for an RFD port"
        # No RFD socket yet: received packets are not even classified (rps_needed stays off).
        assert fs.counter_total(delta_plain, "rx_active") + fs.counter_total(delta_plain, "rx_passive") == 0
        assert share(plain) < 0.9
        rfd = run_clients(V4, addr, PORT, cpus, rfd=True)
        assert steering()
        assert share(rfd) == 1.0, [(c.cpu, c.incoming_cpu) for c in rfd if c.cpu != c.incoming_cpu]
        set_param("rfd_steer", 0)
        assert not steering()
        set_param("rfd_steer", 2)  # automatic again: RFD sockets were seen since the module loaded
        assert steering()
        set_param("rfd_steer", 1)
        assert steering()


def test_automatic_steering_stays_in_the_namespaces_that_use_rfd(cpus, veth, module) -> None:
    """rfd_steer=2 steers only where a socket asked for RFD; rfd_steer=1 everywhere; a reload forgets."""
    server, client = veth.server[V4], "10.97.0.1"
    with reply_server(V4, server, PORT), reply_server(V4, client, PORT, ns="rfdC"):
        rfd = run_clients(V4, server, PORT, cpus, rfd=True)  # RFD sockets in rfdC
        settle()
        before = fs.read_counters()
        plain = run_clients(V4, client, PORT, cpus, rfd=False, ns="rfdS")  # none in rfdS
        delta = fs.counter_delta(before, fs.read_counters())
        set_param("rfd_steer", 1)
        before = fs.read_counters()
        run_clients(V4, client, PORT, cpus, rfd=False, ns="rfdS")
        delta_everywhere = fs.counter_delta(before, fs.read_counters())
        fs.unload_module()
        fs.load_module()
        run_clients(V4, client, PORT, cpus[:1], rfd=True, ns="rfdS")  # now rfdS uses RFD, rfdC not yet
        settle()
        before = fs.read_counters()
        reloaded = run_clients(V4, server, PORT, cpus, rfd=False)
        delta_reloaded = fs.counter_delta(before, fs.read_counters())
    assert share(rfd) == 1.0, [(c.cpu, c.incoming_cpu) for c in rfd if c.cpu != c.incoming_cpu]
    # rfdS's replies to its plain clients are not steered (only rfdC's packets are classified).
    assert fs.counter_total(delta, "rx_active") == 0, delta
    assert share(plain) < 0.9, f"{share(plain):.0%} of rfdS's replies on the connecting CPU: steered?"
    assert fs.counter_total(delta_everywhere, "rx_active") >= len(plain), delta_everywhere
    assert steering()
    assert fs.counter_total(delta_reloaded, "rx_active") == 0, f"rfdC still steered after a reload: {delta_reloaded}"
    assert share(reloaded) < 0.9


def test_rfd_ports_all_needs_no_socket_option(cpus, veth, module) -> None:
    addr = veth.server[V4]
    set_param("rfd_ports", 2)
    with reply_server(V4, addr, PORT):
        conns = run_clients(V4, addr, PORT, cpus, rfd=False)
    assert all(c.port & cpu_mask() == c.cpu for c in conns), [(c.cpu, c.port) for c in conns]
    assert share(conns) == 1.0
    # rfd_ports=0: the option is refused, and sockets that set it before get stock ports.
    set_param("rfd_ports", 1)
    with fs.netns("rfdC"):
        socks = [rfd_socket(V4, True) for _ in range(32)]
    set_param("rfd_ports", 0)
    try:
        probe = socket.socket()
        assert fs.errno_of(probe.setsockopt, socket.IPPROTO_TCP, TCP_FASTSOCKET_RFD, 1) == errno.EOPNOTSUPP
        assert fs.errno_of(probe.setsockopt, socket.IPPROTO_TCP, TCP_FASTSOCKET_RFD_TASK, 1) == errno.EOPNOTSUPP
        probe.close()
        # Stock connect() prefers ports of ip_local_port_range's low bound's parity (even),
        # so from an odd CPU a CPU-encoded port would stand out.
        with reply_server(V4, addr, PORT), fs.pinned(cpus[1]):
            for s in socks:
                s.connect((addr, PORT))
        classes = {local_port(s) & cpu_mask() for s in socks}
    finally:
        for s in socks:
            s.close()
    assert classes != {cpus[1]}, "rfd_ports=0 still encodes the CPU in every port"


# A process that asks for RFD once, for itself (TCP_FASTSOCKET_RFD_TASK), run apart from
# pytest so the flag does not outlive the test. It reports its connections as JSON lines
# [phase, value]: its own, a thread's, a forked child's, an exec'd copy's (which does not
# ask), and, once told to go on, its own again.
RFD_TASK_CLIENT = r"""
import json, os, socket, subprocess, sys, threading
RFD_TASK, SO_INCOMING_CPU = 0x4657, 49
cpu, addr, port, n, ask = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
os.sched_setaffinity(0, {cpu})

def one():
    with socket.socket() as s:
        s.settimeout(30)
        s.connect((addr, port))
        s.sendall(b"q\n")
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = s.recv(128)
            if not chunk:
                raise SystemExit("server closed before replying")
            reply += chunk
        return [s.getsockname()[1], s.getsockopt(socket.SOL_SOCKET, SO_INCOMING_CPU)]

def emit(phase, value):
    print(json.dumps([phase, value]), flush=True)

if ask == "ask":
    with socket.socket() as s:
        s.setsockopt(socket.IPPROTO_TCP, RFD_TASK, 1)
with socket.socket() as s:
    emit("flag", s.getsockopt(socket.IPPROTO_TCP, RFD_TASK))
emit("self", [one() for _ in range(n)])
if ask != "ask":
    sys.exit(0)
got = []
t = threading.Thread(target=lambda: got.extend(one() for _ in range(n)))
t.start()
t.join()
emit("thread", got)
pid = os.fork()
if pid == 0:
    emit("fork", [one() for _ in range(n)])
    os._exit(0)
os.waitpid(pid, 0)
for line in subprocess.run([sys.executable, __file__, *sys.argv[1:5], "no"], stdout=subprocess.PIPE,
                           check=True, text=True).stdout.splitlines():
    phase, value = json.loads(line)
    emit("exec-" + phase, value)
emit("waiting", 0)
sys.stdin.readline()
emit("reloaded", [one() for _ in range(n)])
"""


def test_rfd_for_a_whole_process_with_one_option(tmp_path: Path, cpus, veth, module) -> None:
    """TCP_FASTSOCKET_RFD_TASK, set once, gives every later connect() of the thread, of its new
    threads and of its forked children a port of their CPU and the replies on that CPU, with no
    per-socket option; a program it execs starts without it; it survives a module reload."""
    addr, cpu, mask = veth.server[V4], cpus[1], cpu_mask()
    script = tmp_path / "rfd_task_client.py"
    script.write_text(RFD_TASK_CLIENT)
    with reply_server(V4, addr, PORT):
        proc = subprocess.Popen(
            ["ip", "netns", "exec", "rfdC", "python3", str(script), str(cpu), addr, str(PORT), "16", "ask"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        got: dict[str, object] = {}
        try:
            assert proc.stdout and proc.stdin
            for line in proc.stdout:
                phase, value = json.loads(line)
                got[phase] = value
                if phase == "waiting":
                    fs.unload_module()
                    fs.load_module()
                    proc.stdin.write("go\n")
                    proc.stdin.flush()
            assert proc.wait(60) == 0, f"client failed; it reported {sorted(got)}"
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert got["flag"] == 1 and got["exec-flag"] == 0, got
    for phase in ("self", "thread", "fork", "reloaded"):
        conns = got[phase]
        assert isinstance(conns, list) and len(conns) == 16, (phase, conns)
        assert all(p & mask == cpu for p, _ in conns), f"{phase}: ports {[p for p, _ in conns]} on CPU {cpu}"
        assert all(inc == cpu for _, inc in conns), f"{phase}: replies on CPUs {[inc for _, inc in conns]}"
    # The exec'd program did not ask: stock ports (even first, whatever the CPU).
    exec_classes = {p & mask for p, _ in got["exec-self"]}  # type: ignore[union-attr]
    assert exec_classes != {cpu}, f"the exec'd program still got CPU {cpu}'s ports"


# -- 2. port selection keeps stock behaviour -------------------------------------------------


@contextlib.contextmanager
def loopback_ns(name: str, port_range: str | None = None) -> Iterator[None]:
    sh(f"ip netns add {name} && ip -n {name} link set lo up")
    try:
        if port_range:
            sh(f"ip netns exec {name} sysctl -q -w net.ipv4.ip_local_port_range='{port_range}'")
        yield
    finally:
        sh(f"ip netns del {name}", check=False)


def fill_ports(cpu: int, rfd: bool, ns: str, port: int) -> tuple[list[int], int]:
    """Connect to 127.0.0.1:port until the kernel refuses; returns (local ports, errno of the refusal)."""
    socks: list[socket.socket] = []
    err = 0
    with fs.pinned(cpu), fs.netns(ns):
        try:
            for _ in range(100):
                s = rfd_socket(V4, rfd)
                socks.append(s)
                try:
                    s.connect(("127.0.0.1", port))
                except OSError as exc:
                    err = exc.errno
                    socks.pop().close()
                    break
            ports = [local_port(s) for s in socks]
        finally:
            for s in socks:
                s.close()
    return ports, err


def test_port_range_exhaustion_falls_back_and_never_fails_earlier(cpus, module) -> None:
    """10 ephemeral ports: RFD gives this CPU's 5 first, then the others; connect fails where stock fails."""
    with loopback_ns("rfdX", "40000 40009"):
        # Two destinations: the first run's ports linger in TIME_WAIT towards the first.
        with fs.netns("rfdX"):
            lsns = [socket.socket(), socket.socket()]
        for i, lsn in enumerate(lsns):
            lsn.bind(("127.0.0.1", 9000 + i))
            lsn.listen(256)
        try:
            before = fs.read_counters()
            ports, err = fill_ports(cpus[0], True, "rfdX", 9000)
            delta = fs.counter_delta(before, fs.read_counters())
            stock_ports, stock_err = fill_ports(cpus[0], False, "rfdX", 9001)
        finally:
            for lsn in lsns:
                lsn.close()
    assert sorted(stock_ports) == list(range(40000, 40010)) and stock_err == errno.EADDRNOTAVAIL
    assert sorted(ports) == list(range(40000, 40010)), f"RFD got ports {sorted(ports)}, stock got all 10"
    assert err == errno.EADDRNOTAVAIL, f"11th connect failed with {fs.ename(err)}"
    mine = [p for p in ports if p & cpu_mask() == cpus[0]]
    assert ports[: len(mine)] == mine, f"this CPU's ports did not come first: {ports}"
    assert fs.counter_total(delta, "port_fallback") >= 10 - len(mine), delta


def test_rfd_ports_use_every_port_of_the_cpu(cpus, module) -> None:
    """Successive connects reach all of the CPU's ports, not a half that would be reused twice as often.

    Stock connect() keeps to ports of one parity and moves its start on by one to
    eight of them per connect; narrowed to the CPU's ports (every mask + 1-th) the
    start must move on the same way, so 100 connects in a range too large to wrap
    reach the CPU's ports of both residues modulo 2 * (mask + 1). (Taking the
    even stock offset modulo the CPU's port count reached only one of them.)
    """
    mask = cpu_mask()
    with loopback_ns("rfdW", "40000 59999"):
        with fs.netns("rfdW"):
            lsn = socket.socket()
        lsn.bind(("127.0.0.1", 9002))
        lsn.listen(512)
        try:
            for c in cpus:
                ports, err = fill_ports(c, True, "rfdW", 9002)
                assert err == 0 and len(ports) == 100, (c, fs.ename(err), len(ports))
                assert all(p & mask == c for p in ports), (c, sorted(ports))
                classes = {(p - 40000) // (mask + 1) % 2 for p in ports}
                assert classes == {0, 1}, f"CPU {c} used only ports {sorted(ports)}: every other port of its own"
        finally:
            lsn.close()


def test_per_socket_port_range_and_bind_paths(cpus, module) -> None:
    mask = cpu_mask()
    with loopback_ns("rfdB"):
        with fs.netns("rfdB"):
            lsn = socket.socket()
        lsn.bind(("127.0.0.1", 9001))
        lsn.listen(256)
        try:
            for c in cpus:
                with fs.pinned(c), fs.netns("rfdB"):
                    for _ in range(8):
                        # IP_LOCAL_PORT_RANGE: the CPU's ports inside the socket's own range
                        s = rfd_socket(V4)
                        s.setsockopt(socket.IPPROTO_IP, IP_LOCAL_PORT_RANGE, struct.pack("I", (50015 << 16) | 50000))
                        s.connect(("127.0.0.1", 9001))
                        p = local_port(s)
                        assert 50000 <= p <= 50015 and p & mask == c, (c, p)
                        s.close()
                        # bind(addr, 0)
                        s = rfd_socket(V4)
                        s.bind(("127.0.0.1", 0))
                        assert local_port(s) & mask == c, (c, local_port(s))
                        s.close()
                        # IP_BIND_ADDRESS_NO_PORT: chosen at connect
                        s = rfd_socket(V4)
                        s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                        s.bind(("127.0.0.1", 0))
                        assert local_port(s) == 0
                        s.connect(("127.0.0.1", 9001))
                        assert local_port(s) & mask == c, (c, local_port(s))
                        s.close()
                        # IPv6 bind(::1, 0)
                        s = rfd_socket(V6)
                        s.bind(("::1", 0))
                        assert local_port(s) & mask == c, (c, local_port(s))
                        s.close()
        finally:
            lsn.close()


def _proc_ports(ns: str, name: str) -> set[int]:
    with fs.netns(ns):
        text = Path(f"/proc/thread-self/net/{name}").read_text()
    ports = set()
    for line in text.splitlines()[1:]:
        local = line.split()[1]
        ports.add(int(local.split(":")[1], 16))
    return ports


def test_listings_see_every_rfd_connection(cpus, module) -> None:
    """ss (inet_diag) and /proc/net/tcp{,6} list every connection, on every CPU."""
    with loopback_ns("rfdL"):
        with fs.netns("rfdL"):
            l4, l6 = socket.socket(), socket.socket(V6)
        l4.bind(("127.0.0.1", 9002))
        l6.bind(("::1", 9002))
        for lsn in (l4, l6):
            lsn.listen(256)
        socks: list[socket.socket] = []
        before = fs.read_counters()
        try:
            for c in cpus:
                with fs.pinned(c), fs.netns("rfdL"):
                    for fam, addr in ((V4, "127.0.0.1"), (V6, "::1")):
                        for _ in range(10):
                            s = rfd_socket(fam)
                            s.connect((addr, 9002))
                            socks.append(s)
            want4 = {local_port(s) for s in socks if s.family == V4}
            want6 = {local_port(s) for s in socks if s.family == V6}
            assert want4 <= _proc_ports("rfdL", "tcp"), want4 - _proc_ports("rfdL", "tcp")
            assert want6 <= _proc_ports("rfdL", "tcp6"), want6 - _proc_ports("rfdL", "tcp6")
            out = sh("ip netns exec rfdL ss -tnH state established").stdout
            listed = {int(line.split()[2].rsplit(":", 1)[1]) for line in out.splitlines() if line.strip()}
            missing = (want4 | want6) - listed
            assert not missing, f"ss does not list local ports {sorted(missing)}:\n{out}"
            # Loopback traffic is never steered: it is processed on the sender's CPU, as stock.
            delta = fs.counter_delta(before, fs.read_counters())
            assert fs.counter_total(delta, "rx_active") == 0, delta
        finally:
            for s in socks:
                s.close()
            l4.close()
            l6.close()


# -- 2b. per-CPU partition of the established table ------------------------------------------


def _exchange(pairs: list[tuple[socket.socket, socket.socket]], tag: bytes) -> None:
    for c, s in pairs:
        c.sendall(tag)
        assert s.recv(64) == tag
        s.sendall(tag[::-1])
        assert c.recv(64) == tag[::-1]


def test_ehash_partition_switched_under_live_connections(cpus, module) -> None:
    """Connections made with the partition off, on, and off again all keep working, are all
    listed, survive rmmod, and close without a reset."""
    mask = cpu_mask()
    with loopback_ns("rfdE"):
        with fs.netns("rfdE"):
            lsn = socket.socket()
        lsn.bind(("127.0.0.1", 9003))
        lsn.listen(512)
        pairs: list[tuple[socket.socket, socket.socket]] = []
        try:
            for phase in (0, 1, 0):
                set_param("ehash_partition", phase)
                for c in cpus:
                    with fs.pinned(c), fs.netns("rfdE"):
                        for _ in range(12):
                            cl = rfd_socket(V4)
                            cl.connect(("127.0.0.1", 9003))
                            sv, _ = lsn.accept()
                            assert local_port(cl) & mask == c
                            pairs.append((cl, sv))
                _exchange(pairs, f"phase{phase}".encode())
            assert "ehash_partition 0" in Path("/proc/net/fastsocket").read_text()
            out = sh("ip netns exec rfdE ss -tnH state established '( sport = :9003 )'").stdout
            assert len(out.splitlines()) == len(pairs), out
            set_param("ehash_partition", 1)
            fs.unload_module()
            _exchange(pairs, b"after-rmmod")
            for cl, sv in pairs:
                cl.shutdown(socket.SHUT_WR)
                assert sv.recv(8) == b"", "server saw data or a reset instead of the client's FIN"
                sv.close()
                assert cl.recv(8) == b""
        finally:
            for cl, sv in pairs:
                cl.close()
                sv.close()
            lsn.close()


# -- 3. interface: bad input, info, unload ---------------------------------------------------


def test_bad_socket_option_and_parameter_values_are_rejected(module) -> None:
    s = socket.socket()
    try:
        for value in (2, -1, 1 << 20):
            assert fs.errno_of(s.setsockopt, socket.IPPROTO_TCP, TCP_FASTSOCKET_RFD, value) == errno.EINVAL
        assert fs.errno_of(s.setsockopt, socket.IPPROTO_TCP, TCP_FASTSOCKET_RFD, b"\x01\x00") == errno.EINVAL
        s.setsockopt(socket.IPPROTO_TCP, TCP_FASTSOCKET_RFD, 1)
        assert s.getsockopt(socket.IPPROTO_TCP, TCP_FASTSOCKET_RFD) == 1
        flags = struct.unpack("IiII", s.getsockopt(socket.IPPROTO_TCP, fs.TCP_FASTSOCKET_INFO, fs.INFO_LEN))[0]
        assert flags & FASTSOCKET_INFO_RFD
        s.setsockopt(socket.IPPROTO_TCP, TCP_FASTSOCKET_RFD, 0)
        assert s.getsockopt(socket.IPPROTO_TCP, TCP_FASTSOCKET_RFD) == 0
        # The thread-wide option (its value 1 is tested in a process of its own).
        for value in (2, -1, 1 << 20):
            assert fs.errno_of(s.setsockopt, socket.IPPROTO_TCP, TCP_FASTSOCKET_RFD_TASK, value) == errno.EINVAL
        assert fs.errno_of(s.setsockopt, socket.IPPROTO_TCP, TCP_FASTSOCKET_RFD_TASK, b"\x01") == errno.EINVAL
        s.setsockopt(socket.IPPROTO_TCP, TCP_FASTSOCKET_RFD_TASK, 0)
        assert s.getsockopt(socket.IPPROTO_TCP, TCP_FASTSOCKET_RFD_TASK) == 0
    finally:
        s.close()
    bad_values = [
        ("rfd_ports", "3"),
        ("rfd_ports", "-1"),
        ("rfd_ports", "x"),
        ("rfd_steer", "3"),
        ("rfd_steer", ""),
        ("ehash_partition", "2"),
        ("ehash_partition", "on"),
    ]
    for name, bad in bad_values:
        with pytest.raises(OSError) as exc:
            set_param(name, bad)
        assert exc.value.errno == errno.EINVAL, (name, bad, exc.value)
    assert get_param("rfd_ports") == 1 and get_param("rfd_steer") == 2


def test_option_fails_cleanly_without_the_module(no_module) -> None:
    s = socket.socket()
    try:
        assert fs.errno_of(s.setsockopt, socket.IPPROTO_TCP, TCP_FASTSOCKET_RFD, 1) == errno.ENOPROTOOPT
        assert fs.errno_of(s.setsockopt, socket.IPPROTO_TCP, TCP_FASTSOCKET_RFD_TASK, 1) == errno.ENOPROTOOPT
    finally:
        s.close()


def test_unload_under_connect_load_keeps_traffic_flowing(cpus, veth, module) -> None:
    addr = veth.server[V4]
    failures: list[str] = []
    done = threading.Event()
    count = [0]

    def client(cpu: int) -> None:
        with fs.pinned(cpu):
            while not done.is_set():
                try:
                    request(V4, addr, PORT, "rfdC", rfd=False)
                    count[0] += 1
                except (OSError, AssertionError) as exc:
                    failures.append(repr(exc))

    with reply_server(V4, addr, PORT):
        set_param("rfd_ports", 2)
        threads = [threading.Thread(target=client, args=(c,)) for c in cpus]
        for t in threads:
            t.start()
        time.sleep(2)
        mid = count[0]
        fs.unload_module()
        time.sleep(2)
        done.set()
        for t in threads:
            t.join(60)
    assert not failures, failures[:5]
    assert mid > 0 and count[0] > mid, f"connections before unload {mid}, total {count[0]}"


OPTION_LOOP = r"""
#define _GNU_SOURCE
#include <netinet/in.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/socket.h>

int main(int argc, char **argv)
{
	int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0), opt;
	socklen_t len = sizeof(one);
	cpu_set_t set;

	if (argc != 3 || fd < 0)
		return 1;
	opt = atoi(argv[2]);
	CPU_ZERO(&set);
	CPU_SET(atoi(argv[1]), &set);
	if (sched_setaffinity(0, sizeof(set), &set))
		return 1;
	for (;;) {
		setsockopt(fd, IPPROTO_TCP, opt, &one, sizeof(one));
		getsockopt(fd, IPPROTO_TCP, opt, &one, &len);
		one = 1;
		len = sizeof(one);
	}
}
"""


def test_unload_succeeds_while_every_cpu_uses_the_socket_options(cpus, module) -> None:
    """An RFD server sets TCP_FASTSOCKET_RFD on every connect(): rmmod must not fail with
    "in use" because an option call was in flight, and the options answer ENOPROTOOPT while
    the module is out and work again once it is back."""
    src, exe = Path("/tmp/fs_optloop.c"), "/tmp/fs_optloop"
    src.write_text(OPTION_LOOP)
    sh(f"cc -O2 -o {exe} {src}")
    loops = [subprocess.Popen([exe, str(c), str(TCP_FASTSOCKET_RFD)]) for c in cpus]
    try:
        time.sleep(1)
        for cycle in range(8):
            assert all(p.poll() is None for p in loops), "an option loop died"
            fs.unload_module()  # raises, with modprobe's message, if the module was "in use"
            with socket.socket() as s:
                assert fs.errno_of(s.setsockopt, socket.IPPROTO_TCP, TCP_FASTSOCKET_RFD, 1) == errno.ENOPROTOOPT
            fs.load_module()
            with socket.socket() as s:
                s.setsockopt(socket.IPPROTO_TCP, TCP_FASTSOCKET_RFD, 1)
                assert s.getsockopt(socket.IPPROTO_TCP, TCP_FASTSOCKET_RFD) == 1, f"cycle {cycle}"
            time.sleep(0.2)
    finally:
        for p in loops:
            p.kill()
            p.wait()


# -- 4. HAProxy proxying to nginx backends in another namespace --------------------------------

BACKEND_NGINX = """
daemon off;
master_process on;
worker_processes 2;
user root;
pid {d}/nginx.pid;
error_log {d}/error.log notice;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 10.97.0.2:80;
        listen 10.97.0.2:8081;
        root {d}/www;
    }}
}}
"""

PROXY_HAPROXY = """
global
    nbthread 2
    cpu-map auto:1/1-2 0-1
    maxconn 2000
defaults
    mode http
    option httpclose
    http-reuse never
    timeout connect 5s
    timeout client 10s
    timeout server 10s
frontend fe
    bind 127.0.0.1:{port}
    default_backend be
backend be
    server b1 10.97.0.2:80
    server b2 10.97.0.2:8081
"""


def test_haproxy_proxies_to_nginx_backends_with_rfd(tmp_path: Path, cpus, veth) -> None:
    """wrk -> HAProxy (LD_PRELOAD, 2 pinned threads) -> nginx in rfdS: no errors, stock and with RFD.

    With the module, every backend connection got a CPU-encoded source port
    (port_scan, no fallback) and the backends' replies were steered (rx_active).
    """
    from tests.vm.test_servers import Server, wrk

    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("fastsock backend\n" * 4)
    conf = tmp_path / "nginx.conf"
    conf.write_text(BACKEND_NGINX.format(d=tmp_path))
    backend = subprocess.Popen(
        ["ip", "netns", "exec", "rfdS", "nginx", "-c", str(conf), "-p", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    results: dict[str, dict] = {}
    try:
        time.sleep(1)
        assert backend.poll() is None, f"backend nginx exited: {(tmp_path / 'error.log').read_text()}"
        hconf = tmp_path / "haproxy.cfg"
        hconf.write_text(PROXY_HAPROXY.format(port=8093))
        for variant in ("stock", "fastsocket"):
            if variant == "fastsocket":
                fs.load_module()
            elif fs.module_loaded():
                fs.unload_module()
            try:
                # HAProxy and wrk run in the client namespace (threads inherit it).
                with (
                    fs.netns("rfdC"),
                    Server(["haproxy", "-db", "-f", str(hconf)], 8093, tmp_path / f"haproxy-{variant}.log"),
                ):
                    time.sleep(0.5)
                    before = init_counters()
                    requests = wrk("http://127.0.0.1:8093/index.html", seconds=4)
                    after = init_counters()
                results[variant] = {"requests": requests, **{k: after[k] - before[k] for k in after}}
            finally:
                if fs.module_loaded():
                    fs.unload_module()
    finally:
        os.killpg(backend.pid, 15)
        backend.wait(timeout=20)
    fs.report("rfd-haproxy", results)
    got = results["fastsocket"]
    assert results["stock"]["requests"] > 0
    # The readiness probe and wrk each open backend connections: at least one per request.
    assert got["port_scan"] >= got["requests"], got
    assert got["port_fallback"] == 0, got
    assert got["rx_active"] >= got["requests"], got

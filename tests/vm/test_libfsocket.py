"""libfsocket.so preloaded into a real TCP server: transparent, and its switches work."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.vm import fslisten as fs
from tests.vm.guest import kernel_dir, sh

SERVER = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(16)
print('ready', flush=True)
for _ in range(int(sys.argv[2])):
    c, _ = s.accept(); c.sendall(c.recv(1024).upper()); c.close()
"""


def start_preloaded(
    tmp_path, source: str, args: list[str], env: dict[str, str], cpus: set[int] | None = None
) -> subprocess.Popen:
    """Start a Python server under LD_PRELOAD=libfsocket.so (on `cpus` if given); return once it printed 'ready'."""
    (tmp_path / "srv.py").write_text(source)
    full_env = {"PATH": "/usr/bin:/bin", "LD_PRELOAD": str(kernel_dir() / "libfsocket.so"), **env}
    srv = subprocess.Popen(
        [sys.executable, tmp_path / "srv.py", *args],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    )
    line = srv.stdout.readline().strip()
    if line != "ready":
        srv.kill()
        raise AssertionError(f"server did not start: {line!r} {srv.stderr.read()}")
    return srv


def run_server(
    tmp_path, env: dict[str, str], port: int, conns: int = 5, cpus: set[int] | None = None
) -> tuple[int, str]:
    srv = start_preloaded(tmp_path, SERVER, [str(port), str(conns)], env, cpus)
    try:
        for i in range(conns):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
                c.sendall(f"hello {i}".encode())
                assert c.recv(1024) == f"HELLO {i}".encode()
        rc = srv.wait(timeout=20)
        return rc, srv.stderr.read()
    finally:
        srv.kill()


@pytest.fixture
def no_module():
    sh("modprobe -r fastsocket", check=False)
    yield


def test_without_module_warns_once_and_serves(tmp_path, no_module) -> None:
    rc, err = run_server(tmp_path, {}, 7101)
    assert rc == 0
    assert err.count("fastsocket module not loaded") == 1
    assert "portable mode" in err


def test_without_module_portable_off_passes_through(tmp_path, no_module) -> None:
    rc, err = run_server(tmp_path, {"FSOCKET_PORTABLE": "0"}, 7105)
    assert rc == 0
    assert err.count("passing sockets through") == 1


def test_with_module_no_warning(tmp_path) -> None:
    sh("modprobe fastsocket")
    try:
        rc, err = run_server(tmp_path, {"FSOCKET_VERBOSE": "1"}, 7102)
    finally:
        sh("modprobe -r fastsocket")
    assert rc == 0
    assert "module found" in err and "not loaded" not in err
    assert "listen fd" in err


@pytest.fixture
def one_cpu_online():
    """Every CPU but the first taken offline (module unloaded around it), and brought back."""
    others = fs.online_cpus()[1:]
    assert others, "the VM tests boot with 2 or more vCPUs"
    sh("modprobe -r fastsocket", check=False)
    try:
        for c in others:
            sh(f"echo 0 > /sys/devices/system/cpu/cpu{c}/online")
        sh("modprobe fastsocket")
        yield
    finally:
        sh("modprobe -r fastsocket", check=False)
        for c in others:
            sh(f"echo 1 > /sys/devices/system/cpu/cpu{c}/online", check=False)
    assert fs.online_cpus()[1:] == others


def test_one_cpu_online_passes_through(tmp_path, one_cpu_online) -> None:
    """With one CPU every connection is local already: the library stays out of the way."""
    before = fs.read_counters()
    rc, err = run_server(tmp_path, {"FSOCKET_VERBOSE": "1"}, 7106)
    assert rc == 0, err
    assert "may run on one CPU only; listen sockets pass through" in err
    assert "listen fd" not in err, err  # no listener was enabled
    delta = fs.counter_delta(before, fs.read_counters())
    # an enabled listener would count each SYN, locally or globally
    assert fs.counter_total(delta, "listen_local") + fs.counter_total(delta, "listen_global") == 0, delta


@pytest.mark.parametrize("width", [1, 2])
def test_affinity_mask_decides_pass_through(tmp_path, width: int) -> None:
    """A server confined to one CPU (taskset, cpuset) passes through; confined to two it is accelerated."""
    cpus = set(fs.online_cpus()[-width:])
    sh("modprobe fastsocket")
    try:
        rc, err = run_server(tmp_path, {"FSOCKET_VERBOSE": "1"}, 7107 + width, cpus=cpus)
    finally:
        sh("modprobe -r fastsocket")
    assert rc == 0, err
    if width == 1:
        assert "may run on one CPU only; listen sockets pass through" in err, err
        assert "local listeners enabled" not in err, err
    else:
        assert "pass through" not in err and "passing sockets through" not in err, err
        assert "per-CPU local listeners enabled" in err, err


def test_disable_switch_is_silent(tmp_path, no_module) -> None:
    rc, err = run_server(tmp_path, {"FSOCKET_DISABLE": "1"}, 7103)
    assert rc == 0 and err == ""


@pytest.mark.parametrize("bad", ["http", "0", "70000", "80,,", "80;443"])
def test_bad_ports_value_is_reported_not_fatal(tmp_path, no_module, bad: str) -> None:
    rc, err = run_server(tmp_path, {"FSOCKET_PORTS": bad}, 7104)
    assert rc == 0
    assert f"FSOCKET_PORTS={bad} is not" in err


SHORTCONN = Path(__file__).resolve().parents[2] / "tools" / "workloads" / "shortconn.py"


def shortconn(env: dict[str, str], port: int) -> dict:
    """The prefork workload (one pinned worker per CPU, pinned clients) under the given environment."""
    import json

    full_env = {"PATH": "/usr/bin:/bin", "LD_PRELOAD": str(kernel_dir() / "libfsocket.so"), **env}
    res = subprocess.run(
        [sys.executable, SHORTCONN, "--port", str(port), "--conns", "40"],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout)


def test_portable_mode_gives_locality_without_the_module(no_module) -> None:
    out = shortconn({}, 7110)
    assert out["accepted"] == out["connections"] == 80
    # Each worker's SO_REUSEPORT sibling with SO_INCOMING_CPU takes its CPU's SYNs.
    assert out["local_share"] == 1.0, out


def test_portable_mode_can_be_switched_off(no_module) -> None:
    out = shortconn({"FSOCKET_PORTABLE": "0"}, 7111)
    assert out["accepted"] == out["connections"] == 80


# A pinned process whose listener got its local listener (epoll registration),
# then: four accept() calls on an empty queue, one connection from its own CPU
# (loopback: the SYN is processed here, so it queues on the local listener)
# and the accept() that takes it.
EMPTY_ACCEPTS = r"""
import os, select, socket, sys
cpu = int(sys.argv[2])
os.sched_setaffinity(0, {cpu})
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(16); s.setblocking(False)
ep = select.epoll(); ep.register(s.fileno(), select.EPOLLIN)
print('G', s.fileno(), flush=True)
os.write(1, b'EMPTY\n')
for _ in range(4):
    try:
        s.accept()
        sys.exit('accept() on an empty queue returned a connection')
    except BlockingIOError:
        pass
os.write(1, b'CONNECT\n')
c = socket.create_connection(('127.0.0.1', int(sys.argv[1])))
assert ep.poll(5), 'no readiness for the queued connection'
conn, _ = s.accept()
conn.close(); c.close()
os.write(1, b'DONE\n')
"""


def test_empty_accept_on_the_local_cpu_costs_one_system_call(tmp_path) -> None:
    """On its local listener's CPU, the kernel's answer to accept() already covers L: an empty
    answer goes back at once, and L itself is tried only when the previous answer was empty too
    (the check that notices a local listener the module shut down)."""
    check_empty_accepts(tmp_path, fs.online_cpus()[-1])


def check_empty_accepts(tmp_path, cpu: int) -> None:
    """test_empty_accept_on_the_local_cpu_costs_one_system_call, for a worker pinned to `cpu`."""
    (tmp_path / "empty.py").write_text(EMPTY_ACCEPTS)
    trace = tmp_path / "strace.txt"
    server = [sys.executable, str(tmp_path / "empty.py"), "7120", str(cpu)]
    sh("modprobe fastsocket")
    try:
        res = subprocess.run(
            ["strace", "-e", "trace=accept4,write", "-o", str(trace), *server],
            env={"PATH": "/usr/bin:/bin", "LD_PRELOAD": str(kernel_dir() / "libfsocket.so")},
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        sh("modprobe -r fastsocket")
    assert res.returncode == 0, res.stdout + res.stderr
    g = int(res.stdout.split()[1])
    text = trace.read_text()
    empty = text[text.index('"EMPTY\\n"') : text.index('"CONNECT\\n"')]
    served = text[text.index('"CONNECT\\n"') : text.index('"DONE\\n"')]
    on_g = [line for line in empty.splitlines() if line.startswith(f"accept4({g},")]
    on_l = [line for line in empty.splitlines() if line.startswith("accept4(") and not line.startswith(f"accept4({g},")]
    assert len(on_g) == 4 and all("EAGAIN" in line for line in on_g), empty
    assert len(on_l) == 2 and all("EAGAIN" in line for line in on_l), empty
    # The queued connection comes from L through G, in one system call.
    calls = [line for line in served.splitlines() if line.startswith("accept4(")]
    assert len(calls) == 1 and calls[0].startswith(f"accept4({g},") and "EAGAIN" not in calls[0], served


THREADED = r"""
import json, os, select, socket, sys, threading
port, n, cpus = int(sys.argv[1]), int(sys.argv[2]), [int(c) for c in sys.argv[3].split(',')]
g = socket.socket(); g.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
g.bind(('127.0.0.1', port)); g.listen(256); g.setblocking(False)
stats = {c: {'wakeups': 0, 'accepted': 0} for c in cpus}
lock = threading.Lock(); done = threading.Event(); phase1 = {}
def serve(cpu, ready):
    os.sched_setaffinity(0, {cpu})   # this thread only
    ep = select.epoll(); ep.register(g.fileno(), select.EPOLLIN); ready.set()
    while not done.is_set():
        events = ep.poll(0.1)
        if not events:
            continue
        with lock:
            stats[cpu]['wakeups'] += 1
        try:
            c, _ = g.accept()
        except BlockingIOError:
            continue
        c.setblocking(True); c.sendall(c.recv(64)); c.close()
        with lock:
            stats[cpu]['accepted'] += 1
            total = sum(s['accepted'] for s in stats.values())
            if total == n:
                phase1.update(json.loads(json.dumps(stats)))
            if total == 2 * n:
                done.set()
threads = []
for cpu in cpus:                      # one at a time, each gets a local listener for its CPU
    ready = threading.Event(); t = threading.Thread(target=serve, args=(cpu, ready)); t.start(); ready.wait()
    threads.append(t)
print('ready', flush=True)
for t in threads:
    t.join()
print(json.dumps({'phase1': phase1, 'end': stats}), flush=True)
"""


def test_threads_on_other_cpus_are_not_woken_for_the_local_listener(tmp_path, threaded_module) -> None:
    """Two threads, each pinned and with its own epoll set (as HAProxy's): a local listener each, waking only its own.

    Connections from a client on one thread's CPU are all queued on that
    CPU's local listener and accepted by that thread, and the other thread's
    epoll set is never ready meanwhile; then the same from the other CPU.
    """
    cpus = fs.online_cpus()[:2]
    n = 40
    srv = start_preloaded(tmp_path, THREADED, ["7111", str(n), ",".join(map(str, cpus))], {})
    try:
        fs.echo_from(cpus, 7111, n, tag="ping ")  # phase 1 from the first thread's CPU, phase 2 from the other
        out, err = srv.communicate(timeout=30)
    finally:
        srv.kill()
    assert srv.returncode == 0, err
    res = json.loads(out.strip().splitlines()[-1])
    first, other = (str(c) for c in cpus)
    assert res["phase1"][first]["accepted"] == n, res
    assert res["phase1"][other]["wakeups"] == 0, f"the thread on CPU {other} was woken for CPU {first}'s: {res}"
    assert res["end"][other]["accepted"] == n, f"CPU {other}'s connections not all taken by its thread: {res}"
    woken = res["end"][first]["wakeups"] - res["phase1"][first]["wakeups"]
    assert woken == 0, f"the thread on CPU {first} was woken {woken} times for CPU {other}'s: {res}"


REFUSED = r"""
import os, select, socket, sys, threading
port, n, a, b = (int(x) for x in sys.argv[1:5])
g = socket.socket(); g.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
g.bind(('127.0.0.1', port)); g.listen(256); g.setblocking(False)
def serve(cpu, count, ready, name):
    os.sched_setaffinity(0, {cpu})
    ep = select.epoll(); ep.register(g.fileno(), select.EPOLLIN); ready()
    done = 0
    while done < count:
        if not ep.poll(20):
            print(f'{name}: nothing to accept for 20 s after {done}', flush=True); os._exit(3)
        try:
            c, _ = g.accept()
        except BlockingIOError:
            continue
        c.setblocking(True); c.sendall(name.encode() + c.recv(64)); c.close(); done += 1
    return ep
r, w = os.pipe()
if os.fork() == 0:                    # a worker process that takes CPU b's local listener first
    serve(b, n, lambda: os.write(w, b'x'), 'child'); os._exit(0)
os.read(r, 1)
stop, on_a, on_b = threading.Event(), threading.Event(), threading.Event()
serve_a = threading.Thread(target=serve, args=(a, n, on_a.set, 'parent')); serve_a.start()
on_a.wait()                           # CPU a's local listener first, then the refused one
def idle_on_b():                      # this process's thread on CPU b: its CPU is the child's
    ep = serve(b, 0, on_b.set, 'parent-b'); stop.wait(); ep.close()
t = threading.Thread(target=idle_on_b); t.start()
on_b.wait(); print('ready', flush=True)
serve_a.join(); stop.set(); t.join()
print('pid', os.wait()[1], flush=True)
"""


def test_a_refused_further_cpu_leaves_the_threads_other_local_listeners(tmp_path, threaded_module) -> None:
    """CPU b is another worker's (EBUSY): the process keeps CPU a's local listener; both CPUs stay served."""
    a, b = fs.online_cpus()[:2]
    n = 20
    before = fs.read_counters()
    srv = start_preloaded(tmp_path, REFUSED, ["7112", str(n), str(a), str(b)], {"FSOCKET_VERBOSE": "1"})
    try:
        for cpu, who in ((a, b"parent"), (b, b"child")):
            with fs.pinned(cpu):
                for i in range(n):
                    with socket.create_connection(("127.0.0.1", 7112), timeout=10) as s:
                        s.sendall(f"{i}".encode())
                        assert s.recv(64) == who + f"{i}".encode(), f"connection {i} from CPU {cpu}"
        out, err = srv.communicate(timeout=30)
    finally:
        srv.kill()
    delta = fs.counter_delta(before, fs.read_counters())
    assert srv.returncode == 0 and "pid 0" in out, (out, err)
    assert f"on CPU {b}: TCP_FASTSOCKET_LOCAL: Device or resource busy" in err, err
    assert "passing through" not in err, err
    assert fs.counter_total(delta, "listen_global") == 0, delta  # every SYN met a local listener
    assert fs.counter_total(delta, "spawned") == 2, delta


@pytest.fixture
def threaded_module():
    sh("modprobe fastsocket")
    yield
    sh("modprobe -r fastsocket", check=False)


# Options set on the listener after listen(), as HAProxy and nginx do: (level, option, value).
LISTENER_OPTIONS = [
    (socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0),
    (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
    (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 77),
    (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 11),
    (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 4),
    (socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 4321),
    (socket.SOL_SOCKET, socket.SO_RCVBUF, 65536),
]

OPTIONS_SERVER = r"""
import json, os, select, socket, sys
port, opts = int(sys.argv[1]), json.loads(sys.argv[2])
g = socket.socket(); g.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
g.bind(('127.0.0.1', port)); g.listen(16)
for level, opt, value in opts:
    g.setsockopt(level, opt, value)
g.setblocking(False)
os.sched_setaffinity(0, {0})             # a worker pinned to CPU 0: it gets CPU 0's local listener
ep = select.epoll(); ep.register(g, select.EPOLLIN)
print('ready', flush=True)
assert ep.poll(30)
c, _ = g.accept()
print(json.dumps([c.getsockopt(level, opt) for level, opt, _ in opts]), flush=True)
c.close()
"""


def _accepted_options(tmp_path, env: dict[str, str], port: int) -> tuple[list[int], str]:
    """The LISTENER_OPTIONS of a connection from CPU 0, read on the accepted socket; the server's stderr."""
    srv = start_preloaded(tmp_path, OPTIONS_SERVER, [str(port), json.dumps(LISTENER_OPTIONS)], env)
    try:
        with fs.pinned(0), socket.create_connection(("127.0.0.1", port), timeout=10):
            line = srv.stdout.readline()
        err = srv.stderr.read()
        assert srv.wait(timeout=20) == 0, err
        return json.loads(line), err
    finally:
        srv.kill()


def test_connections_from_local_listeners_carry_the_listeners_options(tmp_path) -> None:
    """A connection accepted through a local listener has the options the server set on its
    listener, in portable mode and with the module, as one accepted from the listener itself."""
    sh("modprobe -r fastsocket", check=False)
    control, _ = _accepted_options(tmp_path, {"FSOCKET_DISABLE": "1"}, 7130)
    assert control[:7] == [v for _, _, v in LISTENER_OPTIONS[:7]], "the control: stock inheritance"
    portable, err = _accepted_options(tmp_path, {"FSOCKET_VERBOSE": "1"}, 7131)
    assert "local listener fd" in err and "on CPU 0" in err, err
    sh("modprobe fastsocket")
    try:
        before = fs.read_counters()
        kernel, _ = _accepted_options(tmp_path, {}, 7132)
        accepted_local = fs.counter_total(fs.counter_delta(before, fs.read_counters()), "accept_local")
    finally:
        sh("modprobe -r fastsocket")
    assert accepted_local == 1, "the module's connection did not come through a local listener"
    names = [f"{level}/{opt}" for level, opt, _ in LISTENER_OPTIONS]
    assert dict(zip(names, portable, strict=True)) == dict(zip(names, control, strict=True)), "portable mode"
    assert dict(zip(names, kernel, strict=True)) == dict(zip(names, control, strict=True)), "kernel mode"


CONNECTER = r"""
import json, os, socket, subprocess, sys
port, n, child = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ports = []
for _ in range(n):
    with socket.create_connection(('127.0.0.1', port), timeout=10) as c:
        ports.append(c.getsockname()[1])
print(json.dumps(ports), flush=True)
if child != '-':   # the same program, exec'd with FSOCKET_RFD=<child>
    subprocess.run([sys.executable, __file__, str(port), str(n), '-'], check=True,
                   env={**os.environ, 'FSOCKET_RFD': child})
"""

TCP_FASTSOCKET_RFD, TCP_FASTSOCKET_RFD_TASK = 0x4656, 0x4657


def _rfd_option_calls(trace: str, opt: int) -> list[str]:
    return [
        line for line in trace.splitlines() if "setsockopt(" in line and (f"{opt:#x}" in line or f" {opt}," in line)
    ]


def test_connect_asks_for_no_rfd_option_of_its_own(tmp_path) -> None:
    """With the module, the library asks once, at the thread's first connect(), for CPU-encoded
    ports for the thread: each later connect() is one system call and still gets a port of its CPU. A child
    exec'd with FSOCKET_RFD=0 gets stock ports."""
    from tests.vm.test_rfd import cpu_mask

    cpu, mask = fs.online_cpus()[1], cpu_mask()  # CPU 1: stock connect() prefers even ports
    (tmp_path / "conn.py").write_text(CONNECTER)
    trace = tmp_path / "strace.txt"
    argv = ["strace", "-f", "-e", "trace=setsockopt,connect", "-o", str(trace), sys.executable]
    lsn = socket.socket()
    lsn.bind(("127.0.0.1", 7140))
    lsn.listen(256)
    sh("modprobe fastsocket")
    try:
        res = subprocess.run(
            [*argv, tmp_path / "conn.py", "7140", "16", "0"],
            env={"PATH": "/usr/bin:/bin", "LD_PRELOAD": str(kernel_dir() / "libfsocket.so")},
            capture_output=True,
            text=True,
            timeout=60,
            preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
        )
    finally:
        sh("modprobe -r fastsocket")
        lsn.close()
    assert res.returncode == 0, res.stdout + res.stderr
    mine, child = (json.loads(line) for line in res.stdout.splitlines())
    text = trace.read_text()
    task_calls = _rfd_option_calls(text, TCP_FASTSOCKET_RFD_TASK)
    assert len(task_calls) == 1 and task_calls[0].rstrip().endswith("= 0"), task_calls
    assert _rfd_option_calls(text, TCP_FASTSOCKET_RFD) == [], "a connect() still set TCP_FASTSOCKET_RFD"
    assert sum(line.split(None, 1)[1].startswith("connect(") for line in text.splitlines()) >= 32, text
    assert all(p & mask == cpu for p in mine), f"ports {mine} on CPU {cpu}"
    assert {p & mask for p in child} != {cpu}, f"FSOCKET_RFD=0: the child still got CPU {cpu}'s ports {child}"


def test_a_server_that_only_accepts_does_not_turn_steering_on(tmp_path) -> None:
    """Receive steering classifies every packet: a preloaded server that never connects must not
    start it (rfd_steer=2); the first preloaded connect() does."""
    from tests.vm.test_rfd import steering

    (tmp_path / "conn.py").write_text(CONNECTER)
    lsn = socket.socket()
    lsn.bind(("127.0.0.1", 7142))
    lsn.listen(64)
    sh("modprobe fastsocket")
    try:
        rc, err = run_server(tmp_path, {"FSOCKET_VERBOSE": "1"}, 7141)
        after_server = steering()
        res = subprocess.run(
            [sys.executable, tmp_path / "conn.py", "7142", "2", "-"],
            env={"PATH": "/usr/bin:/bin", "LD_PRELOAD": str(kernel_dir() / "libfsocket.so")},
            capture_output=True,
            text=True,
            timeout=60,
        )
        after_client = steering()
    finally:
        sh("modprobe -r fastsocket")
        lsn.close()
    assert rc == 0, err
    assert "per-CPU local listeners enabled" in err, err  # it was accelerated
    assert not after_server, "an accept-only preloaded server turned receive steering on"
    assert res.returncode == 0, res.stderr
    assert after_client, "a preloaded connect() did not turn receive steering on"

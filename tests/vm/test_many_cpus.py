"""libfsocket.so on a machine with more than 64 CPUs (a guest of 72 vCPUs).

The library keeps its sets of CPUs (local listeners per listener, the
CPUs whose spawn was refused, the CPUs of a listener's local listeners
that its accept() fast path reads) as bitmaps of every CPU an affinity
mask can name; these tests fail where one of them is 64 bits wide.
"""

from __future__ import annotations

import json

import pytest

from tests.vm import fslisten as fs
from tests.vm.guest import sh
from tests.vm.test_libfsocket import check_empty_accepts, start_preloaded

pytestmark = pytest.mark.vcpus(72)

# One thread per CPU in argv[3], each pinned there with its own epoll set
# (HAProxy's layout), started one after the other so that each gets its
# CPU's local listener. A client sends "<its CPU> <seq>"; the thread that
# accepts records it. Prints {thread CPU: [client CPUs]} once n are served.
PER_CPU_THREADS = r"""
import json, os, select, socket, sys, threading
port, n, cpus = int(sys.argv[1]), int(sys.argv[2]), [int(c) for c in sys.argv[3].split(',')]
g = socket.socket(); g.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
g.bind(('127.0.0.1', port)); g.listen(256); g.setblocking(False)
seen = {c: [] for c in cpus}
lock = threading.Lock(); done = threading.Event()
def serve(cpu, ready):
    os.sched_setaffinity(0, {cpu})
    ep = select.epoll(); ep.register(g.fileno(), select.EPOLLIN); ready.set()
    while not done.is_set():
        if not ep.poll(0.1):
            continue
        try:
            c, _ = g.accept()
        except BlockingIOError:
            continue
        c.setblocking(True); msg = c.recv(64); c.sendall(msg); c.close()
        with lock:
            seen[cpu].append(int(msg.split()[0]))
            if sum(len(v) for v in seen.values()) == n:
                done.set()
threads = []
for cpu in cpus:
    ready = threading.Event(); t = threading.Thread(target=serve, args=(cpu, ready)); t.start(); ready.wait()
    threads.append(t)
print('ready', flush=True)
for t in threads:
    t.join()
print(json.dumps(seen), flush=True)
"""


@pytest.fixture
def module():
    sh("modprobe fastsocket")
    yield
    sh("modprobe -r fastsocket", check=False)


def test_the_guest_has_more_than_64_cpus() -> None:
    assert len(fs.online_cpus()) > 64, fs.online_cpus()


def test_a_thread_on_every_cpu_gets_a_local_listener_beyond_cpu_63(tmp_path, module) -> None:
    """72 pinned threads watch one listener: 72 local listeners, and each connection from a
    client on CPU c (loopback: its SYN is processed on c) is accepted by the thread on c."""
    cpus = fs.online_cpus()
    clients = [0, 63, 64, cpus[-1]]
    per = 10
    before = fs.read_counters()
    srv = start_preloaded(
        tmp_path, PER_CPU_THREADS, ["7130", str(per * len(clients)), ",".join(map(str, cpus))], {"FSOCKET_VERBOSE": "1"}
    )
    try:
        fs.echo_from(clients, 7130, per, timeout=20)
        out, err = srv.communicate(timeout=120)
    finally:
        srv.kill()
    assert srv.returncode == 0, err
    seen = {int(k): v for k, v in json.loads(out.strip().splitlines()[-1]).items()}
    delta = fs.counter_delta(before, fs.read_counters())
    assert "no local listener" not in err, err
    for c in (64, cpus[-1]):
        assert f"on CPU {c}\n" in err, f"no local listener reported for CPU {c}:\n{err}"
    assert fs.counter_total(delta, "spawned") == len(cpus), delta
    wrong = {t: v for t, v in seen.items() if any(c != t for c in v)}
    assert not wrong, f"connections accepted by a thread on another CPU: {wrong}"
    assert all(len(seen[c]) == per for c in clients), seen
    assert fs.counter_total(delta, "listen_global") == 0, delta


def test_empty_accept_costs_one_system_call_on_cpu_64_and_up(tmp_path) -> None:
    """The accept() fast path reads the CPUs of the listener's local listeners: also above 63."""
    check_empty_accepts(tmp_path, fs.online_cpus()[-1])

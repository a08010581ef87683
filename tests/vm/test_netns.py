"""Network namespaces with a veth pair carry TCP traffic."""

from __future__ import annotations

import os

import pytest

from tests.vm.guest import sh

SERVER = r"""
import hashlib, socket, sys
s = socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 5001)); s.listen(8)
print('ready', flush=True)
for _ in range(int(sys.argv[2])):
    c, _ = s.accept()
    h = hashlib.sha256(); n = 0
    while True:
        b = c.recv(65536)
        if not b: break
        h.update(b); n += len(b)
    c.sendall(f'{n} {h.hexdigest()}'.encode()); c.close()
"""

CLIENT = r"""
import os, socket, sys
data = os.urandom(int(sys.argv[2]))
c = socket.create_connection((sys.argv[1], 5001), timeout=30)
c.sendall(data); c.shutdown(socket.SHUT_WR)
print(c.recv(200).decode()); print(__import__('hashlib').sha256(data).hexdigest())
"""


@pytest.fixture
def veth_pair():
    sh("ip netns add fsA && ip netns add fsB")
    try:
        sh("ip link add vA netns fsA type veth peer name vB netns fsB")
        sh("ip -n fsA addr add 10.99.0.1/24 dev vA && ip -n fsB addr add 10.99.0.2/24 dev vB")
        sh("ip -n fsA addr add fd99::1/64 dev vA nodad && ip -n fsB addr add fd99::2/64 dev vB nodad")
        for ns, dev in (("fsA", "vA"), ("fsB", "vB")):
            sh(f"ip -n {ns} link set {dev} up && ip -n {ns} link set lo up")
        yield
    finally:
        sh("ip netns del fsA; ip netns del fsB", check=False)


@pytest.mark.parametrize("server_addr", ["10.99.0.2", "fd99::2"])
def test_tcp_across_veth(veth_pair, server_addr: str, tmp_path) -> None:
    import subprocess
    import sys

    (tmp_path / "srv.py").write_text(SERVER)
    (tmp_path / "cli.py").write_text(CLIENT)
    conns = 4
    srv = subprocess.Popen(
        ["ip", "netns", "exec", "fsB", sys.executable, tmp_path / "srv.py", server_addr, str(conns)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert srv.stdout.readline().strip() == "ready"
        for size in (1, 1 << 20, 3 << 20, 65537):
            out = sh(f"ip netns exec fsA {sys.executable} {tmp_path / 'cli.py'} {server_addr} {size}").stdout.split()
            n, got, want = int(out[0]), out[1], out[2]
            assert n == size and got == want
        assert srv.wait(timeout=30) == 0
    finally:
        srv.kill()


def test_namespaces_are_isolated(veth_pair) -> None:
    # fsA sees only its own veth end and loopback; the root namespace does not see vA.
    links = sh("ip -n fsA -o link show").stdout
    assert "vA@" in links and "vB" not in links
    assert "vA" not in sh("ip -o link show").stdout
    assert os.path.exists("/var/run/netns/fsA")

"""Upstream net selftests (reuseport, SO_INCOMING_CPU, bind) pass with the fastsocket module loaded.

The programs come from build/linux/tools/testing/selftests/net/, built with the
host's gcc into build/selftests/ by tools/selftests.py. The build must happen on
the host before the guest boots, and the guest boots at the first guest test
(which is in another file), so it runs when this module is imported on the host
(at collection); it only recompiles what changed. test_selftests_built reports
a failed build. Inside the guest each program runs twice: with the module merely
loaded, and while an unrelated listener has fastsocket enabled with a local
listener on every CPU (so the kernel's fastsocket paths are live).
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
from pathlib import Path

import pytest

from tests.vm import fslisten
from tests.vm.guest import IN_GUEST, sh

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "build" / "selftests"
KSFT_SKIP = 4


def _load_builder():
    spec = importlib.util.spec_from_file_location("fastsock_tools_selftests", REPO / "tools" / "selftests.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


BUILD_ERROR: str | None = None
if not IN_GUEST:
    try:
        _load_builder().build(out=OUT)
    except Exception as exc:  # reported by test_selftests_built, not at collection
        BUILD_ERROR = f"{type(exc).__name__}: {exc}"


# name -> argv, run with cwd=build/selftests (the wrappers call ./in_netns.sh and ./prog).
# bind_bhash.sh as upstream runs it (IPv6), plus its IPv4 mode.
CASES: dict[str, list[str]] = {
    "reuseport_bpf": ["./reuseport_bpf"],
    "reuseport_bpf_cpu": ["./reuseport_bpf_cpu"],
    "reuseport_addr_any": ["./reuseport_addr_any.sh"],
    "so_incoming_cpu": ["./so_incoming_cpu"],
    "bind_bhash_v6": ["./bind_bhash.sh"],
    "bind_bhash_v4": ["./bind_bhash.sh", "-4"],
    # In a fresh network namespace: its cases expect exact bind() outcomes on the port its first bind(0)
    # picks, and a TIME_WAIT socket of an earlier test on that port (more likely since RFD gives odd CPUs
    # odd connect() ports, the half bind(0) prefers) made one case fail intermittently in the root namespace.
    "bind_wildcard": ["unshare", "-n", "sh", "-c", "ip link set lo up && exec ./bind_wildcard"],
}
TIMEOUT = 120


@pytest.mark.host
def test_selftests_built() -> None:
    assert BUILD_ERROR is None, f"building the net selftests failed: {BUILD_ERROR}"
    stale = _load_builder().up_to_date(out=OUT)
    assert not stale, f"not built or stale in {OUT}: {stale}"


@pytest.fixture(scope="module")
def module_loaded():
    sh("modprobe fastsocket")
    try:
        yield
    finally:
        sh("modprobe -r fastsocket")


RFD_PORTS = Path("/sys/module/fastsocket/parameters/rfd_ports")
ACTIVE_PORT = [0]  # the "active" state's enabled listener port, for failure messages


@pytest.fixture(params=["loaded", "active", "rfd"])
def fastsocket_state(request, module_loaded):
    """loaded: the module only. active: also an enabled listener with a local listener per CPU.
    rfd: every TCP socket gets a CPU-encoded local port (rfd_ports=2), with receive steering on."""
    if request.param == "loaded":
        yield request.param
        return
    if request.param == "rfd":
        RFD_PORTS.write_text("2\n")
        try:
            yield request.param
        finally:
            RFD_PORTS.write_text("1\n")
        return
    socks: list[socket.socket] = []
    try:
        fslisten.set_listen_spawn(1)
        g = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        socks.append(g)
        g.bind(("127.0.0.1", 0))
        ACTIVE_PORT[0] = g.getsockname()[1]
        g.listen(64)
        fslisten.enable(g)
        cpus = fslisten.online_cpus()
        for cpu in cpus:
            local = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(local)
            fslisten.make_local(local, g, cpu)
        assert fslisten.info(g).nr_local == len(cpus)
        yield request.param
    finally:
        for s in reversed(socks):
            s.close()


def program(argv: list[str]) -> Path:
    """The selftest file a case runs: the first ./name in its command line."""
    return OUT / next(w for a in argv for w in a.split() if w.startswith("./"))[2:]


@pytest.mark.parametrize("name", list(CASES))
def test_selftest(name: str, fastsocket_state: str) -> None:
    argv = CASES[name]
    prog = program(argv)
    assert prog.is_file(), f"{prog} missing: the host builds it (tools/selftests.py) before the guest boots"
    assert Path("/proc/net/fastsocket").exists(), "the fastsocket module is not loaded"
    try:
        res = subprocess.run(argv, cwd=OUT, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{name} did not finish in {TIMEOUT} s:\n{exc.stdout}\n{exc.stderr}") from None
    failing = [line for line in res.stdout.splitlines() if line.startswith("not ok") or "FAIL" in line]
    out = (
        f"--- failing cases ---\n{chr(10).join(failing[:40])}\n"
        f"(fastsocket_state {fastsocket_state}: enabled listener on 127.0.0.1:{ACTIVE_PORT[0]})\n"
        f"--- stdout ---\n{res.stdout[-6000:]}\n--- stderr ---\n{res.stderr[-3000:]}"
    )
    assert res.returncode != KSFT_SKIP, f"{name} skipped (kselftest exit 4): a skip is not a pass\n{out}"
    assert res.returncode == 0, f"{name} exited {res.returncode}\n{out}"
    if name.startswith("bind_bhash"):
        # bind_bhash always exits 0 and bind_bhash.sh returns `ip netns del`'s status,
        # so a failure only shows as a perror() line and a missing timing line.
        assert "time spent =" in res.stdout, f"{name} did not reach its timed bind\n{out}"
        assert "failed" not in res.stderr and "err" not in res.stderr, out

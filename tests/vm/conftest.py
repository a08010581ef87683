"""tests/vm: tests that need the built kernel.

On the host, every test here (except those marked `host`) is replaced by a
GuestItem; the first one to run boots one guest with virtme-ng, which runs
pytest on the same test ids inside the VM and writes one result per test.
Tests marked `vcpus(N)` run in a guest of their own with N vCPUs (default
2), booted the same way when the first of them runs.
Each host item then passes or fails with its guest result and output. A test
that skips inside the guest fails on the host: a VM test that skips is not a
pass. In the guest (FASTSOCK_IN_GUEST=1) the tests run normally.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from fastsock import hostdeps
from fastsock.errors import HostError
from fastsock.paths import Layout
from fastsock.runner import Runner
from fastsock.vm import VMRequest, VMResult, VMRunner, dmesg_problems, kernel_image
from tests.vm.guest import IN_GUEST, kernel_dir

REPO = Path(__file__).resolve().parents[2]
VM_TIMEOUT = float(os.environ.get("FASTSOCK_VM_TIMEOUT", "1800"))
DEFAULT_VCPUS = 2


@dataclass
class GuestSession:
    result: VMResult
    outcomes: dict[str, dict]
    results_dir: Path


_sessions: dict[int, GuestSession] = {}


def vcpus_of(item: pytest.Item) -> int:
    """The vCPUs of the guest an item runs in: its vcpus(N) marker, or DEFAULT_VCPUS."""
    mark = item.get_closest_marker("vcpus")
    if mark is None:
        return DEFAULT_VCPUS
    n = mark.args[0] if mark.args else None
    if not isinstance(n, int) or not 1 <= n <= 255:
        raise pytest.UsageError(f"{item.nodeid}: vcpus(N) wants an int N from 1 to 255, got {mark.args!r}")
    return n


def _run_guest(config: pytest.Config, nodeids: list[str], cpus: int) -> GuestSession:
    layout = Layout.default()
    name = time.strftime("%Y%m%d-%H%M%S") + ("" if cpus == DEFAULT_VCPUS else f"-{cpus}cpus")
    results_dir = layout.build / "vm-results" / name
    results_dir.mkdir(parents=True, exist_ok=True)
    kdir = kernel_dir()
    kernel_image(kdir)  # fails clearly when nothing is built
    try:  # pytest run directly, not through `build.py test` (which installs them)
        hostdeps.ensure(hostdeps.VM_NEEDS + hostdeps.SERVER_NEEDS, Runner(), install=False)
    except HostError as exc:
        pytest.fail(f"{exc}\n  or run `python3 build.py test`, which installs them", pytrace=False)
    inner = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-q",
        "-rA",
        "--color=no",
        "-o",
        "addopts=",
        *nodeids,
    ]
    env = {
        "FASTSOCK_IN_GUEST": "1",
        "FASTSOCK_RESULTS": str(results_dir / "results.json"),
        "FASTSOCK_KERNEL_DIR": str(kdir),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PATH": f"{Path(sys.executable).parent}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    }
    req = VMRequest(
        kernel_dir=kdir,
        command=shlex.join(inner),
        cpus=cpus,
        memory="2G",
        timeout=VM_TIMEOUT,
        rwdirs=(results_dir,),
        cwd=REPO,
        env=env,
    )
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter:
        reporter.write_line(f"\n[fastsock] booting {kdir} ({cpus} vCPUs) for {len(nodeids)} guest tests ...")
    res = VMRunner(Runner(), layout.cache).run(req)
    if res.returncode != 0 and not (res.stdout + res.stderr + res.dmesg).strip() and res.elapsed < 30:
        # The guest never printed a thing: QEMU or virtme-ng failed to start (seen once
        # while the host was saturated). Not a test result: boot once more.
        if reporter:
            reporter.write_line(f"[fastsock] guest exited {res.returncode} after {res.elapsed:.1f} s, silent; retrying")
        res = VMRunner(Runner(), layout.cache).run(req)
    (results_dir / "guest-stdout.txt").write_text(res.stdout)
    (results_dir / "guest-stderr.txt").write_text(res.stderr)
    (results_dir / "dmesg.txt").write_text(res.dmesg)
    try:
        outcomes = json.loads((results_dir / "results.json").read_text())
    except (OSError, ValueError):
        outcomes = {}
    if reporter:
        first = outcomes.get("__first_test_uptime__", {}).get("value")
        reporter.write_line(
            f"[fastsock] guest exited {res.returncode} after {res.elapsed:.1f} s ({res.accel}); "
            f"first guest test at guest uptime {first} s; results in {results_dir}"
        )
    return GuestSession(res, outcomes, results_dir)


def guest_session(config: pytest.Config, cpus: int = DEFAULT_VCPUS) -> GuestSession:
    if cpus not in _sessions:
        ids = config.stash.get(_GUEST_IDS, {}).get(cpus, [])
        _sessions[cpus] = _run_guest(config, ids, cpus)
    return _sessions[cpus]


_GUEST_IDS = pytest.StashKey[dict]()


class GuestItem(pytest.Item):
    """Host stand-in for a test that runs inside the guest."""

    def runtest(self) -> None:
        cpus = vcpus_of(self)
        sess = guest_session(self.config, cpus)
        out = sess.outcomes.get(self.nodeid)
        if out is None:
            tail = "\n".join((sess.result.stdout + sess.result.stderr).splitlines()[-60:])
            raise GuestFailure(
                f"no result from the guest for {self.nodeid} (guest exit {sess.result.returncode}).\n"
                f"guest output (tail):\n{tail}"
            )
        if out["outcome"] == "skipped":
            raise GuestFailure(f"skipped in the guest (a VM test that skips is not a pass): {out['longrepr']}")
        if out["outcome"] != "passed":
            raise GuestFailure(f"failed in the guest:\n{out['longrepr']}\n{out.get('sections', '')}")
        # The default guest's log is checked by test_host_checks.py; the others' here.
        bad = dmesg_problems(sess.result.dmesg) if cpus != DEFAULT_VCPUS else []
        if bad:
            raise GuestFailure(f"the {cpus}-vCPU guest's dmesg reports:\n" + "\n".join(bad))

    def repr_failure(self, excinfo, style=None):  # type: ignore[override]
        if isinstance(excinfo.value, GuestFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):  # type: ignore[override]
        return self.path, None, f"[guest] {self.name}"


class GuestFailure(Exception):
    pass


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    if IN_GUEST:
        return
    ids: dict[int, list[str]] = {}
    for i, item in enumerate(items):
        if not str(item.path).startswith(str(Path(__file__).parent)):
            continue
        if item.get_closest_marker("host"):
            continue
        ids.setdefault(vcpus_of(item), []).append(item.nodeid)
        guest_item = GuestItem.from_parent(item.parent, name=item.name)
        guest_item.own_markers.extend(m for m in item.own_markers if m.name == "vcpus")
        items[i] = guest_item
    config.stash[_GUEST_IDS] = ids


@pytest.fixture(scope="session")
def guest(request: pytest.FixtureRequest) -> GuestSession:
    """For host-side tests: the (single) guest run and its results."""
    return guest_session(request.config)


# -- inside the guest: record each test's outcome for the host ----------------

_results: dict[str, dict] = {}


def pytest_runtest_setup(item: pytest.Item) -> None:
    if IN_GUEST and "__first_test_uptime__" not in _results:
        uptime = Path("/proc/uptime").read_text().split()[0]
        _results["__first_test_uptime__"] = {"outcome": "info", "value": uptime}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if not IN_GUEST:
        return
    cur = _results.setdefault(report.nodeid, {"outcome": "passed", "longrepr": "", "sections": ""})
    if report.failed:
        cur["outcome"] = "failed"
        cur["longrepr"] += f"[{report.when}] {report.longreprtext}\n"
    elif report.skipped and cur["outcome"] == "passed":
        cur["outcome"] = "skipped"
        cur["longrepr"] += report.longreprtext
    if report.failed:
        cur["sections"] += "".join(f"--- {name} ---\n{text}\n" for name, text in report.sections)


def pytest_sessionfinish(session: pytest.Session) -> None:
    if IN_GUEST and os.environ.get("FASTSOCK_RESULTS"):
        Path(os.environ["FASTSOCK_RESULTS"]).write_text(json.dumps(_results, indent=1))

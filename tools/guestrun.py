"""Run a shell script in a guest booted from an out/ kernel; collect the files it writes."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# The tools need the venv build.py made (virtme-ng, matplotlib): re-run under it.
_VENV = REPO / ".venv"
if (_VENV / "bin" / "python").exists() and Path(sys.prefix).resolve() != _VENV.resolve():
    os.execv(str(_VENV / "bin" / "python"), [str(_VENV / "bin" / "python"), *sys.argv])

from fastsock import hostdeps  # noqa: E402
from fastsock.errors import HostError  # noqa: E402
from fastsock.paths import Layout  # noqa: E402
from fastsock.runner import Runner  # noqa: E402
from fastsock.vm import VMRequest, VMRunner, dmesg_problems  # noqa: E402


def add_accel_argument(ap: argparse.ArgumentParser) -> None:
    """--accel, for tools whose figures are rates measured in the guest."""
    ap.add_argument(
        "--accel",
        choices=("auto", "kvm", "tcg", "icount"),
        default="auto",
        help="icount: TCG whose guest clock counts instructions (10^9 per guest second), so rates"
        " measure work per event and do not drift with the host (default auto: KVM if it works, else TCG)",
    )


def results_dir(name: str) -> Path:
    """A new out/reports/NAME-TIMESTAMP; two tools started in the same second get -2, -3, ..."""
    base = REPO / "out" / "reports" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    base.parent.mkdir(parents=True, exist_ok=True)
    path, n = base, 1
    while True:
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1
            path = base.with_name(f"{base.name}-{n}")


def run_guest(
    kernel_dir: Path,
    script: str,
    outdir: Path,
    cpus: int = 2,
    timeout: float = 1800,
    tag: str = "",
    accel: str = "auto",
    qemu_opts: str = "",
) -> str:
    """Run script (sh) as root in the guest with $OUT=outdir writable; return its stdout.

    The script, the guest's output and its kernel log are saved in outdir,
    their names prefixed with tag (for several boots into one outdir).

    Raises SystemExit with the guest's output when the script fails or the
    guest's kernel log reports a problem.
    """
    try:  # the guest shares the host's root: QEMU and the servers it starts come from there
        hostdeps.ensure(hostdeps.VM_NEEDS + hostdeps.SERVER_NEEDS, Runner())
    except HostError as e:
        raise SystemExit(str(e)) from e
    pre = f"{tag}-" if tag else ""
    (outdir / f"{pre}guest.sh").write_text(f"set -e\nexport OUT={outdir}\n{script}\n")
    req = VMRequest(
        kernel_dir=kernel_dir,
        command=f"sh {outdir / f'{pre}guest.sh'}",
        cpus=cpus,
        memory="2G",
        timeout=timeout,
        rwdirs=(outdir,),
        cwd=REPO,
        accel=accel,
        qemu_opts=qemu_opts,
    )
    res = VMRunner(Runner(), Layout.default().cache).run(req)
    (outdir / f"{pre}guest-stdout.txt").write_text(res.stdout)
    (outdir / f"{pre}guest-stderr.txt").write_text(res.stderr)
    (outdir / f"{pre}dmesg.txt").write_text(res.dmesg)
    if res.returncode != 0:
        raise SystemExit(f"guest script failed (exit {res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    bad = dmesg_problems(res.dmesg)
    if bad:
        raise SystemExit("guest kernel log reports problems:\n" + "\n".join(bad[:20]))
    return res.stdout

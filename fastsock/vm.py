"""Boot an out/ kernel with virtme-ng and run a command inside it."""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import VMError
from .runner import Runner

log = logging.getLogger(__name__)

DMESG_NAME = "dmesg.txt"
SCRIPT_NAME = "guest-command.sh"
BAD_DMESG = (
    "WARNING:",
    "BUG:",
    "BUG ",
    "Oops",
    "Kernel panic",
    "general protection fault",
    "INFO: task",
    # lockdep reports (a debug kernel also prints harmless lines that mention lockdep)
    "possible circular locking",
    "possible recursive locking",
    "inconsistent lock state",
    "INFO: possible",
    "suspicious RCU usage",
    "turning off the locking correctness validator",
    "KASAN:",
    "UBSAN:",
    "refcount_t:",
)


# TCG with the guest clock driven by the instruction count: a guest second is
# 10^9 instructions, whatever the host's load, and idle time is skipped. Rates
# measured in the guest then count instructions per event (no caches, no lock
# bounce costs) and repeat from run to run, where plain TCG's drift with the host.
ICOUNT_OPTS = "-icount shift=0,sleep=off,align=off"


@dataclass(frozen=True)
class VMRequest:
    kernel_dir: Path  # an out/<arch>/<profile> directory
    command: str  # a shell command line, run as root in the guest
    cpus: int = 2
    memory: str = "2G"
    timeout: float = 900.0
    accel: str = "auto"  # auto | kvm | tcg | icount (see ICOUNT_OPTS)
    rwdirs: tuple[Path, ...] = ()
    cwd: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    append: tuple[str, ...] = ()
    qemu_opts: str = ""  # more QEMU options (e.g. a -plugin); needs accel tcg or icount


@dataclass(frozen=True)
class VMResult:
    returncode: int
    stdout: str
    stderr: str
    dmesg: str
    elapsed: float
    accel: str

    @property
    def timed_out(self) -> bool:
        return self.returncode == 124


def kernel_image(kernel_dir: Path) -> Path:
    """out/<arch>/<profile>/boot/vmlinuz-<kver>, as staged by the build."""
    images = sorted((kernel_dir / "boot").glob("vmlinuz-*"))
    if not images:
        raise VMError(f"no kernel in {kernel_dir}/boot", hint="run `python3 build.py --arch x86_64` first")
    return images[0]


def dmesg_problems(dmesg: str) -> list[str]:
    """Lines of a guest's kernel log that report a warning, bug, lockdep or KASAN splat."""
    return [line for line in dmesg.splitlines() if any(tag in line for tag in BAD_DMESG)]


class VMRunner:
    def __init__(self, runner: Runner, cache: Path, vng: str | None = None) -> None:
        self.runner = runner
        self.cache = cache
        venv_vng = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "vng"
        self.vng = (
            vng or shutil.which("vng") or str(venv_vng if venv_vng.exists() else Path(sys.executable).parent / "vng")
        )

    # -- KVM -----------------------------------------------------------

    def kvm_works(self, image: Path) -> bool:
        """Probe KVM with the -cpu host model virtme-ng uses; cache the answer per QEMU and host kernel."""
        if not os.access("/dev/kvm", os.R_OK | os.W_OK):
            return False
        qemu = shutil.which("qemu-system-x86_64")
        if not qemu:
            return False
        key = f"{self.runner.run([qemu, '--version'], check=False).stdout.splitlines()[:1]}|{os.uname().release}"
        cache_file = self.cache / "kvm-probe.json"
        try:
            cached = json.loads(cache_file.read_text())
            if cached.get("key") == key:
                return bool(cached["works"])
        except (OSError, ValueError, KeyError):
            pass
        argv = [
            qemu,
            "-accel",
            "kvm",
            "-cpu",
            "host",
            "-m",
            "256",
            "-smp",
            "1",
            "-nodefaults",
            "-nographic",
            "-no-reboot",
            "-serial",
            "stdio",
            "-kernel",
            str(image),
            "-append",
            "console=ttyS0 panic=-1 init=/fastsock-kvm-probe",
        ]
        try:
            res = self.runner.run(argv, check=False, timeout=30)
            works = res.returncode == 0 and "Linux version" in res.stdout
        except subprocess.TimeoutExpired:
            works = False
        log.info("KVM probe: %s", "works" if works else "broken here, using TCG")
        self.cache.mkdir(parents=True, exist_ok=True)
        cache_file.write_text(json.dumps({"key": key, "works": works}))
        return works

    # -- run -----------------------------------------------------------

    def command_line(self, req: VMRequest, image: Path, kvm: bool, rwdir: Path) -> list[str]:
        argv = [
            self.vng,
            "--run",
            str(image),
            "--cpus",
            str(req.cpus),
            "--memory",
            req.memory,
            "--force-9p",
            "--rwdir",
            str(rwdir),
        ]
        if not kvm:
            argv.append("--disable-kvm")
        opts = " ".join(o for o in (ICOUNT_OPTS if req.accel == "icount" else "", req.qemu_opts) if o)
        if opts:
            argv += ["--qemu-opts", opts]
        for d in req.rwdirs:
            argv += ["--rwdir", str(d)]
        if req.cwd:
            argv += ["--cwd", str(req.cwd)]
        for a in req.append:
            argv += ["--append", a]
        # The script goes in a file: virtme-ng passes --exec on the kernel command line,
        # which is limited to 2 KiB.
        exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in req.env.items())
        dmesg = shlex.quote(str(rwdir / DMESG_NAME))
        script = rwdir / SCRIPT_NAME
        script.write_text(f"{exports}( {req.command} )\nrc=$?\ndmesg > {dmesg} 2>&1\nexit $rc\n")
        return [*argv, "--exec", f"sh {shlex.quote(str(script))}"]

    def run(self, req: VMRequest) -> VMResult:
        image = kernel_image(req.kernel_dir)
        if req.accel == "kvm":
            kvm = True
        elif req.accel in ("tcg", "icount"):
            kvm = False
        else:
            kvm = self.kvm_works(image)
        with tempfile.TemporaryDirectory(prefix="fastsock-vm-") as tmp:
            rwdir = Path(tmp)
            argv = self.command_line(req, image, kvm, rwdir)
            log.info(
                "booting %s (%s, %d vCPUs)",
                image.name,
                "KVM" if kvm else "TCG + icount" if req.accel == "icount" else "TCG",
                req.cpus,
            )
            log.debug("$ %s", shlex.join(argv))
            start = time.monotonic()
            try:
                # vng runs virtme-run from PATH: put the venv's bin directory first.
                path = f"{Path(self.vng).parent}{os.pathsep}{os.environ.get('PATH', '')}"
                res = self.runner.run(argv, check=False, timeout=req.timeout, env={"PATH": path})
                rc, out, err = res.returncode, res.stdout, res.stderr
            except subprocess.TimeoutExpired as exc:
                rc = 124
                out = _text(exc.stdout)
                err = _text(exc.stderr) + f"\n*** guest timed out after {req.timeout:.0f} s ***\n"
            elapsed = time.monotonic() - start
            dmesg_file = rwdir / DMESG_NAME
            dmesg = dmesg_file.read_text(errors="replace") if dmesg_file.exists() else ""
        if rc == 255 and not out and "cannot find script I/O ports" in err:
            raise VMError("the guest could not reach its script I/O ports", hint="apt-get install udev")
        return VMResult(rc, out, err, dmesg, elapsed, "kvm" if kvm else ("icount" if req.accel == "icount" else "tcg"))


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from fastsock.errors import VMError
from fastsock.runner import Result, Runner
from fastsock.vm import VMRequest, VMRunner, dmesg_problems, kernel_image


class FakeRunner(Runner):
    def __init__(self, result: Result | None = None, timeout: bool = False, writes_dmesg: str = "") -> None:
        self.result = result
        self.timeout = timeout
        self.writes_dmesg = writes_dmesg
        self.argv: list[str] = []

    def run(self, argv, **kw):  # type: ignore[override]
        self.argv = [str(a) for a in argv]
        if self.writes_dmesg:
            i = self.argv.index("--rwdir")
            (Path(self.argv[i + 1]) / "dmesg.txt").write_text(self.writes_dmesg)
        if self.timeout:
            raise subprocess.TimeoutExpired(argv, kw.get("timeout"), output=b"booting", stderr=b"")
        assert self.result is not None
        return self.result


@pytest.fixture
def kdir(tmp_path) -> Path:
    (tmp_path / "boot").mkdir()
    (tmp_path / "boot" / "vmlinuz-6.12.117-fastsock").write_bytes(b"x")
    return tmp_path


def test_command_line(kdir, tmp_path) -> None:
    (tmp_path / "rw").mkdir()
    vm = VMRunner(Runner(), tmp_path, vng="vng")
    req = VMRequest(
        kernel_dir=kdir,
        command="pytest -q",
        cpus=2,
        memory="1G",
        rwdirs=(tmp_path / "r",),
        cwd=Path("/repo"),
        env={"A": "b c"},
    )
    argv = vm.command_line(req, kernel_image(kdir), kvm=False, rwdir=tmp_path / "rw")
    assert argv[:3] == ["vng", "--run", str(kdir / "boot" / "vmlinuz-6.12.117-fastsock")]
    joined = " ".join(argv)
    for piece in ("--cpus 2", "--memory 1G", "--force-9p", "--disable-kvm", f"--rwdir {tmp_path / 'r'}", "--cwd /repo"):
        assert piece in joined
    assert argv[argv.index("--exec") + 1] == f"sh {tmp_path / 'rw' / 'guest-command.sh'}"
    script = (tmp_path / "rw" / "guest-command.sh").read_text()
    assert script.startswith("export A='b c'\n( pytest -q )\nrc=$?\ndmesg > ")
    assert script.endswith("exit $rc\n")
    kvm_argv = vm.command_line(req, kernel_image(kdir), kvm=True, rwdir=tmp_path / "rw")
    assert "--disable-kvm" not in kvm_argv


def test_exit_code_and_dmesg_come_back(kdir, tmp_path) -> None:
    fake = FakeRunner(Result(("vng",), 3, "out", "err", 1.0), writes_dmesg="[0.0] Linux version x\n")
    res = VMRunner(fake, tmp_path).run(VMRequest(kernel_dir=kdir, command="false", accel="tcg"))
    assert (res.returncode, res.stdout, res.accel) == (3, "out", "tcg")
    assert res.dmesg.startswith("[0.0] Linux version")


def test_timeout_returns_124_with_output(kdir, tmp_path) -> None:
    res = VMRunner(FakeRunner(timeout=True), tmp_path).run(
        VMRequest(kernel_dir=kdir, command="sleep 1000", accel="tcg", timeout=5)
    )
    assert res.timed_out and res.stdout == "booting" and "timed out after 5 s" in res.stderr


def test_missing_udev_is_named(kdir, tmp_path) -> None:
    fake = FakeRunner(Result(("vng",), 255, "", "cannot find script I/O ports", 1.0))
    with pytest.raises(VMError, match="udev"):
        VMRunner(fake, tmp_path).run(VMRequest(kernel_dir=kdir, command="true", accel="tcg"))


def test_no_kernel_built(tmp_path) -> None:
    with pytest.raises(VMError, match=r"build\.py"):
        kernel_image(tmp_path)


def test_dmesg_problems() -> None:
    clean = (
        "[    0.000000] Linux version 6.12\n[    1.0] fastsocket: loaded\n"
        "[    1.5] rcu: \tRCU lockdep checking is enabled.\n[    1.6] Lock dependency validator: Copyright\n"
    )
    assert dmesg_problems(clean) == []
    for bad in (
        "[ 2.1] WARNING: CPU: 1 PID: 5 at net/core/sock.c:1 x",
        "[ 3.0] BUG: KASAN: use-after-free",
        "[ 4.0] WARNING: possible circular locking dependency detected",
        "[ 5] Kernel panic - not syncing",
    ):
        assert dmesg_problems(clean + bad + "\n") == [bad]


def test_icount_is_tcg_with_the_instruction_clock(kdir, tmp_path) -> None:
    (tmp_path / "rw").mkdir()
    fake = FakeRunner(Result(("vng",), 0, "", "", 1.0))
    vm = VMRunner(fake, tmp_path, vng="vng")
    res = vm.run(VMRequest(kernel_dir=kdir, command="true", accel="icount"))
    assert res.accel == "icount"
    assert "--disable-kvm" in fake.argv
    assert fake.argv[fake.argv.index("--qemu-opts") + 1].startswith("-icount shift=0,sleep=off")
    plain = vm.command_line(VMRequest(kernel_dir=kdir, command="true"), kernel_image(kdir), False, tmp_path / "rw")
    assert "--qemu-opts" not in plain


def test_more_qemu_options_ride_in_the_same_option_as_icount(kdir, tmp_path) -> None:
    (tmp_path / "rw").mkdir()
    vm = VMRunner(FakeRunner(Result(("vng",), 0, "", "", 1.0)), tmp_path, vng="vng")
    image = kernel_image(kdir)
    req = VMRequest(kernel_dir=kdir, command="true", accel="icount", qemu_opts="-plugin /p.so,out=/o")
    argv = vm.command_line(req, image, False, tmp_path / "rw")
    assert argv.count("--qemu-opts") == 1
    assert argv[argv.index("--qemu-opts") + 1] == "-icount shift=0,sleep=off,align=off -plugin /p.so,out=/o"
    tcg = vm.command_line(VMRequest(kernel_dir=kdir, command="true", qemu_opts="-x"), image, False, tmp_path / "rw")
    assert tcg[tcg.index("--qemu-opts") + 1] == "-x"

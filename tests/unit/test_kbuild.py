from __future__ import annotations

import platform

import pytest

from fastsock import kconfig
from fastsock.arch import get_arch
from fastsock.errors import FastsockError, HostError
from fastsock.kbuild import BuildRequest, KBuild
from fastsock.runner import Runner


def request(tmp_path, arch: str = "x86_64") -> BuildRequest:
    return BuildRequest(
        arch=get_arch(arch),
        profile=kconfig.get_profile("vm"),
        srctree=tmp_path / "linux",
        objdir=tmp_path / "obj",
        fragment_dir=tmp_path,
        jobs=3,
        logfile=tmp_path / "b.log",
    )


def test_diagnose_names_the_failing_file(tmp_path) -> None:
    log = tmp_path / "b.log"
    log.write_text(
        "  CC      net/ipv4/tcp.o\n"
        "net/fastsocket/fastsocket_main.c:42:9: error: implicit declaration of function 'foo'\n"
        "make[4]: *** [scripts/Makefile.build:229: net/fastsocket/fastsocket_main.o] Error 1\n"
    )
    msg = KBuild.diagnose(log)
    assert "net/fastsocket/fastsocket_main.c:42: implicit declaration" in msg
    assert "log tail" in msg


def test_diagnose_falls_back_to_the_make_target(tmp_path) -> None:
    log = tmp_path / "b.log"
    log.write_text("ld: something odd\nmake[2]: *** [scripts/Makefile.vmlinux:34: vmlinux] Error 1\n")
    assert "make target vmlinux" in KBuild.diagnose(log)


def test_make_args(tmp_path) -> None:
    args = KBuild(request(tmp_path), Runner()).make_args("bzImage")
    assert args[:2] == ["make", "-C"] and f"O={tmp_path / 'obj'}" in args and "ARCH=x86_64" in args
    assert args[-1] == "bzImage"


@pytest.mark.skipif(platform.machine() != "x86_64", reason="checks the cross path from x86_64")
def test_cross_build_without_compiler_names_the_package(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no aarch64-linux-gnu-gcc here
    with pytest.raises(HostError) as exc:
        KBuild(request(tmp_path, "arm64"), Runner()).make_args("Image")
    assert "gcc-aarch64-linux-gnu" in str(exc.value)


def test_unknown_arch() -> None:
    with pytest.raises(FastsockError, match="x86_64"):
        get_arch("riscv")


def test_diagnose_names_a_tool_error(tmp_path) -> None:
    log = tmp_path / "b.log"
    log.write_text(
        "dpkg-checkbuilddeps: error: Unmet build dependencies: debhelper-compat (= 12)\n"
        "make[3]: *** [scripts/Makefile.package:126: bindeb-pkg] Error 3\n"
    )
    assert "Unmet build dependencies: debhelper-compat" in KBuild.diagnose(log)

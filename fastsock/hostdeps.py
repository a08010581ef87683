"""Host packages: find what is missing, install it as root, or print the apt-get line."""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .errors import HostError
from .runner import Runner

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Need:
    package: str  # Debian package
    probe: str  # a command on PATH, or an absolute file path
    why: str


BUILD_NEEDS = (
    Need("make", "make", "kbuild"),
    Need("gcc", "gcc", "compiler"),
    Need("libc6-dev", "/usr/include/stdio.h", "C headers for libfsocket and host tools"),
    Need("flex", "flex", "kconfig"),
    Need("bison", "bison", "kconfig"),
    Need("bc", "bc", "kbuild timeconst"),
    Need("perl", "perl", "kbuild scripts"),
    Need("libelf-dev", "/usr/include/gelf.h", "objtool"),
    Need("libssl-dev", "/usr/include/openssl/ssl.h", "module signing tools"),
    Need("cpio", "cpio", "kheaders / initramfs"),
    Need("kmod", "depmod", "modules_install"),
    Need("xz-utils", "xz", "unpacking the source tarball"),
    Need("git", "git", "the patched work tree"),
    Need("ccache", "ccache", "fast rebuilds"),
    Need("linux-source-6.12", "/usr/src/linux-source-6.12.tar.xz", "the kernel source"),
)
VM_NEEDS = (
    Need("qemu-system-x86", "qemu-system-x86_64", "the test VM"),
    Need("udev", "udevadm", "virtme-ng's guest finds its I/O ports through udev"),
    Need("busybox-static", "busybox", "virtme-ng's guest tools"),
    Need("iproute2", "ip", "network namespaces in the guest"),
    Need("file", "file", "virtme-ng reads the kernel release from the image"),
)
# Real servers and load generators the in-guest tests start (the guest shares the host's root).
SERVER_NEEDS = (
    Need("nginx-light", "nginx", "nginx under LD_PRELOAD in the guest"),
    Need("haproxy", "haproxy", "HAProxy under LD_PRELOAD in the guest"),
    Need("redis-server", "redis-server", "redis under LD_PRELOAD in the guest"),
    Need("redis-tools", "redis-benchmark", "load for redis"),
    Need("memcached", "memcached", "memcached under LD_PRELOAD in the guest"),
    Need("wrk", "wrk", "HTTP load for nginx and HAProxy"),
    Need("libevent-dev", "/usr/include/event2/bufferevent.h", "the Slick user-space forwarder (tools/slick)"),
)
DEB_NEEDS = (
    Need("dpkg-dev", "dpkg-buildpackage", "make bindeb-pkg"),
    Need("rsync", "rsync", "make bindeb-pkg headers"),
    Need("debhelper", "dh", "make bindeb-pkg build dependency (debhelper-compat)"),
)


def present(need: Need) -> bool:
    if need.probe.startswith("/"):
        return Path(need.probe).exists()
    return shutil.which(need.probe) is not None


def missing(needs: tuple[Need, ...]) -> list[Need]:
    return [n for n in needs if not present(n)]


def ensure(needs: tuple[Need, ...], runner: Runner, install: bool = True) -> None:
    """Install missing packages when root; otherwise fail with the exact command."""
    lack = missing(needs)
    if not lack:
        return
    pkgs = sorted({n.package for n in lack})
    line = "apt-get install -y " + " ".join(pkgs)
    detail = ", ".join(f"{n.package} ({n.why})" for n in lack)
    if not install or os.geteuid() != 0 or not shutil.which("apt-get"):
        raise HostError(f"missing host packages: {detail}", hint=f"run as root: {line}")
    log.info("installing host packages: %s", " ".join(pkgs))
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    res = runner.run(["apt-get", "install", "-y", "-q", *pkgs], env=env, check=False, timeout=1800)
    if not res.ok:
        log.info("apt-get install failed; running apt-get update once and retrying")
        runner.run(["apt-get", "update", "-q"], env=env, check=False, timeout=900)
        res = runner.run(["apt-get", "install", "-y", "-q", *pkgs], env=env, check=False, timeout=1800)
    if not res.ok:
        raise HostError(
            f"apt-get could not install {' '.join(pkgs)}:\n{res.stderr[-1500:]}",
            hint=f"fix apt (network, sources.list), then: {line}",
        )
    still = missing(needs)
    if still:
        raise HostError("still missing after install: " + ", ".join(n.probe for n in still))

"""Per-architecture build parameters."""

from __future__ import annotations

import platform
from dataclasses import dataclass

from .errors import FastsockError


@dataclass(frozen=True)
class Arch:
    name: str  # the name users pass to --arch
    kernel_arch: str  # ARCH= for make
    image: str  # boot image path inside the build directory
    defconfig: str  # make target for the `server` profile's base
    cross_prefix: str  # CROSS_COMPILE when building on another host
    cross_package: str  # Debian package that provides the cross compiler
    host_machines: tuple[str, ...]  # platform.machine() values that build natively

    def cross_compile(self) -> str | None:
        """CROSS_COMPILE to use on this host, or None for a native build."""
        return None if platform.machine() in self.host_machines else self.cross_prefix


ARCHES: dict[str, Arch] = {
    "x86_64": Arch(
        name="x86_64",
        kernel_arch="x86_64",
        image="arch/x86/boot/bzImage",
        defconfig="x86_64_defconfig",
        cross_prefix="x86_64-linux-gnu-",
        cross_package="gcc-x86-64-linux-gnu",
        host_machines=("x86_64", "amd64"),
    ),
    "arm64": Arch(
        name="arm64",
        kernel_arch="arm64",
        image="arch/arm64/boot/Image",
        defconfig="defconfig",
        cross_prefix="aarch64-linux-gnu-",
        cross_package="gcc-aarch64-linux-gnu",
        host_machines=("aarch64", "arm64"),
    ),
}


def get_arch(name: str) -> Arch:
    try:
        return ARCHES[name]
    except KeyError:
        raise FastsockError(f"unknown architecture {name!r}", hint=f"use one of: {', '.join(sorted(ARCHES))}") from None

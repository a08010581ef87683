"""Where things live: the repo, its inputs, the build and output directories, the cache."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Layout:
    """Directories one run uses. Tests build one over a temporary directory."""

    repo: Path
    build: Path  # work tree and kbuild object directories; survives between runs
    out: Path  # artifacts
    cache: Path  # unpacked base sources, shared by every clone on the machine

    @property
    def kernel_overlay(self) -> Path:
        return self.repo / "kernel"

    @property
    def patches(self) -> Path:
        return self.repo / "patches"

    @property
    def config_fragments(self) -> Path:
        return self.repo / "kernel-config"

    @property
    def libfsocket(self) -> Path:
        return self.repo / "libfsocket"

    @property
    def pin_file(self) -> Path:
        return self.repo / "linux-pin.toml"

    @property
    def worktree(self) -> Path:
        return self.build / "linux"

    def objdir(self, arch: str, profile: str) -> Path:
        return self.build / f"obj-{arch}-{profile}"

    def outdir(self, arch: str, profile: str) -> Path:
        return self.out / arch / profile

    @classmethod
    def default(cls) -> Layout:
        cache = Path(os.environ.get("FASTSOCK_CACHE", Path.home() / ".cache" / "fastsock"))
        build = Path(os.environ.get("FASTSOCK_BUILD_DIR", REPO / "build"))
        return cls(repo=REPO, build=build, out=REPO / "out", cache=cache)

"""Fixtures: a miniature kernel tree and a project layout over a temporary directory."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import pytest

from fastsock.paths import Layout
from fastsock.runner import Runner
from fastsock.source import Pin

KCONFIG = """\
menu "Networking"
config NET
\tbool "Networking"

if NET
config INET
\tbool "TCP/IP"

config FAKE_FEATURE
\ttristate "A feature"
\tdepends on INET && FAKE_HW
endif
endmenu

config FAKE_HW
\tbool

config FAKE_BOOL
\tbool "A bool"
"""


def make_tree(root: Path, sublevel: int = 117, patchlevel: int = 12) -> Path:
    tree = root / "linux-fake"
    (tree / "net").mkdir(parents=True)
    (tree / "Makefile").write_text(f"VERSION = 6\nPATCHLEVEL = {patchlevel}\nSUBLEVEL = {sublevel}\nEXTRAVERSION =\n")
    (tree / "Kconfig").write_text(KCONFIG)
    (tree / "net" / "Makefile").write_text("obj-y += core/\nobj-$(CONFIG_INET) += ipv4/\n")
    (tree / "net" / "Kconfig").write_text('source "net/ipv4/Kconfig"\n')
    (tree / ".gitignore").write_text("/*\n!/debian/\n")  # like Debian's tarball
    return tree


def make_tarball(root: Path, **kw: int) -> Path:
    tree = make_tree(root / "src", **kw)
    tar = root / "linux-fake.tar.xz"
    with tarfile.open(tar, "w:xz") as tf:
        tf.add(tree, arcname="linux-fake")
    return tar


class CountingRunner(Runner):
    """A real runner that records the commands it ran."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def run(self, argv, **kw):  # type: ignore[override]
        self.calls.append(tuple(str(a) for a in argv))
        return super().run(argv, **kw)


@pytest.fixture
def runner() -> CountingRunner:
    return CountingRunner()


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    repo = tmp_path / "repo"
    for d in ("kernel", "patches", "kernel-config", "libfsocket"):
        (repo / d).mkdir(parents=True)
    (repo / "patches" / "series").write_text("# fastsock patch series\n")
    return Layout(repo=repo, build=tmp_path / "build", out=tmp_path / "out", cache=tmp_path / "cache")


@pytest.fixture
def pin(tmp_path: Path) -> Pin:
    return Pin(
        version="6.12.117",
        url="https://example.invalid/linux-6.12.117.tar.xz",
        sha256="",
        sums_url="",
        debian_tarball=tmp_path / "absent.tar.xz",
    )


def git(path: Path, *args: str) -> str:
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
        "PATH": "/usr/bin:/bin",
    }
    return subprocess.run(["git", "-C", str(path), *args], check=True, capture_output=True, text=True, env=env).stdout

"""The server and debug profiles resolve against the real tree with every symbol taking effect."""

from __future__ import annotations

import os

import pytest

from fastsock import kconfig
from fastsock.arch import get_arch
from fastsock.kbuild import BuildRequest, KBuild
from fastsock.paths import Layout
from fastsock.runner import Runner


@pytest.mark.host
@pytest.mark.parametrize("profile", ["server", "debug"])
def test_profile_config_resolves(profile: str) -> None:
    lay = Layout.default()
    if not (lay.worktree / "Makefile").exists():
        pytest.fail("no prepared work tree: run `python3 build.py prepare` (build.py test does)")
    prof = kconfig.get_profile(profile)
    req = BuildRequest(
        arch=get_arch("x86_64"),
        profile=prof,
        srctree=lay.worktree,
        objdir=lay.objdir("x86_64", profile),
        fragment_dir=lay.config_fragments,
        jobs=os.cpu_count() or 1,
        logfile=lay.out / "x86_64" / profile / "build.log",
    )
    requested, digest = KBuild(req, Runner()).configure()
    final = kconfig.parse((req.objdir / ".config").read_text())
    assert requested and all(final.get(n, "n") == v for n, v in requested.items())
    assert final.get("FASTSOCKET") == "m"
    if profile == "debug":
        assert final.get("LOCK_STAT") == "y" and final.get("KASAN") == "y"
    else:
        assert final.get("IXGBE") == "m" and final.get("MLX5_CORE") == "m"
    assert len(digest) == 64

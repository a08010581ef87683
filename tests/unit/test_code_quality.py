"""Repo-wide gates: ruff clean; libfsocket builds warning-free."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_ruff_clean() -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    res = subprocess.run(
        [ruff, "check", "--output-format", "concise", "fastsock", "build.py", "tests", "tools"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("cc", ["gcc"])
def test_libfsocket_builds_with_werror(tmp_path, cc: str) -> None:
    res = subprocess.run(
        ["make", "-s", "-C", REPO / "libfsocket", f"OUT={tmp_path}", f"CC={cc}"], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stdout + res.stderr
    syms = subprocess.run(
        ["nm", "-D", "--defined-only", tmp_path / "libfsocket.so"], capture_output=True, text=True, check=True
    ).stdout
    exported = {line.split()[-1] for line in syms.splitlines() if " T " in line}
    assert "listen" in exported
    assert not {s for s in exported if s.startswith("fsocket_")}, "internal symbols leak out of the library"

"""Helpers for tests that run inside the guest."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

IN_GUEST = os.environ.get("FASTSOCK_IN_GUEST") == "1"


def kernel_dir() -> Path:
    """The out/<arch>/<profile> directory of the kernel under test."""
    return Path(os.environ.get("FASTSOCK_KERNEL_DIR", Path(__file__).resolve().parents[2] / "out/x86_64/vm"))


def manifest() -> dict:
    return json.loads((kernel_dir() / "manifest.json").read_text())


def sh(cmd: str, check: bool = True, timeout: float = 120, **kw) -> subprocess.CompletedProcess[str]:
    """Run a shell command in the guest; on failure the assertion shows its output."""
    res = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=timeout, **kw)
    if check and res.returncode != 0:
        raise AssertionError(f"`{cmd}` exited {res.returncode}\nstdout: {res.stdout}\nstderr: {res.stderr}")
    return res

"""Create the project's virtual environment and re-run inside it. Standard library only."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

MARK = "FASTSOCK_IN_VENV"


def venv_dir(repo: Path) -> Path:
    return Path(os.environ.get("FASTSOCK_VENV", repo / ".venv"))


def _req_hash(req: Path) -> str:
    return hashlib.sha256(req.read_bytes()).hexdigest()


def ensure_venv(repo: Path) -> Path:
    """The venv's python, created or updated when requirements.txt changed."""
    vdir = venv_dir(repo)
    py = vdir / "bin" / "python"
    req = repo / "requirements.txt"
    stamp = vdir / ".fastsock-requirements"
    want = _req_hash(req)
    if py.exists() and stamp.is_file() and stamp.read_text() == want:
        return py
    if not py.exists():
        print(f"[fastsock] creating the virtual environment {vdir}", file=sys.stderr)
        try:
            venv.EnvBuilder(with_pip=True, clear=True).create(vdir)
        except Exception as exc:  # ensurepip is missing from Debian's python3 without python3-venv
            if os.geteuid() != 0:
                sys.exit(f"fastsock: cannot create {vdir}: {exc}\n  fix: apt-get install python3-venv")
            print("[fastsock] installing python3-venv", file=sys.stderr)
            subprocess.call(
                ["apt-get", "install", "-y", "-q", "python3-venv"],
                stdin=subprocess.DEVNULL,
                env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
            )
            venv.EnvBuilder(with_pip=True, clear=True).create(vdir)
    print(f"[fastsock] installing pinned Python dependencies from {req.name}", file=sys.stderr)
    rc = subprocess.call(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", str(req)],
        stdin=subprocess.DEVNULL,
    )
    if rc != 0:
        sys.exit(f"fastsock: pip could not install {req} (exit {rc})\n  fix: check network access to PyPI")
    stamp.write_text(want)
    return py


def reexec_in_venv(repo: Path, argv: list[str]) -> None:
    """Replace this process with the same command under the venv's python."""
    if os.environ.get(MARK) == "1" or os.environ.get("FASTSOCK_NO_VENV") == "1":
        return
    py = ensure_venv(repo)
    env = dict(os.environ, **{MARK: "1"})
    env["PATH"] = f"{py.parent}{os.pathsep}{env.get('PATH', '')}"
    os.execve(str(py), [str(py), *argv], env)

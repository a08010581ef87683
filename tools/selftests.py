#!/usr/bin/env python3
"""Build upstream Linux net selftests with the host's gcc, for the VM tests.

    python3 tools/selftests.py [--force] [--src build/linux] [--out build/selftests]

Compiles the programs in SELFTESTS from <src>/tools/testing/selftests/net/
into <out>/, and copies the shell wrappers they need. The guest sees the repo
read-only at the same path and runs them from there (tests/vm/test_selftests.py).

A program is rebuilt only when its inputs changed: the .c file, the kselftest
headers, the compiler's version or the flags (a stamp in <out>/stamp.json
records a hash of them). The build/linux work tree is only read.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SRC = REPO / "build" / "linux"
DEFAULT_OUT = REPO / "build" / "selftests"
NET = Path("tools/testing/selftests/net")

# program -> extra libraries (as in the upstream net/Makefile)
SELFTESTS: dict[str, tuple[str, ...]] = {
    "reuseport_bpf": (),
    "reuseport_bpf_cpu": (),
    "reuseport_addr_any": (),
    "so_incoming_cpu": (),
    "bind_bhash": ("-lpthread",),
    "bind_wildcard": (),
}
# Upstream runs reuseport_addr_any and bind_bhash through these wrappers.
SCRIPTS = ("in_netns.sh", "reuseport_addr_any.sh", "bind_bhash.sh")
# Upstream flags (net/Makefile, lib.mk). The host's uapi headers stand in for the
# tree's installed headers: these programs need nothing newer than Debian 12's.
CFLAGS = ("-Wall", "-Wl,--no-as-needed", "-O2", "-g", "-D_GNU_SOURCE=")
SHARED_INPUTS = ("../kselftest.h", "../kselftest_harness.h")
STAMP = "stamp.json"


class BuildError(Exception):
    pass


def _input_hash(netdir: Path, name: str, cc_version: str) -> str:
    h = hashlib.sha256()
    h.update(cc_version.encode())
    h.update(repr((CFLAGS, SELFTESTS[name])).encode())
    for rel in (f"{name}.c", *SHARED_INPUTS):
        h.update(rel.encode())
        h.update((netdir / rel).read_bytes())
    return h.hexdigest()


def cc_version(cc: str) -> str:
    try:
        res = subprocess.run([cc, "--version"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BuildError(f"cannot run {cc}: {exc}") from exc
    return res.stdout.splitlines()[0] if res.stdout else cc


def build(src: Path = DEFAULT_SRC, out: Path = DEFAULT_OUT, cc: str = "gcc", force: bool = False) -> dict[str, bool]:
    """Build every program in SELFTESTS into out/. Returns name -> whether it was (re)built."""
    netdir = src / NET
    if not (netdir / "reuseport_bpf.c").is_file():
        raise BuildError(f"no net selftests in {netdir} (run `python3 build.py prepare` first)")
    out.mkdir(parents=True, exist_ok=True)
    try:
        stamp = json.loads((out / STAMP).read_text())
    except (OSError, ValueError):
        stamp = {}
    version = cc_version(cc)
    built: dict[str, bool] = {}
    for name, libs in SELFTESTS.items():
        digest = _input_hash(netdir, name, version)
        target = out / name
        if not force and target.is_file() and stamp.get(name) == digest:
            built[name] = False
            continue
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=out)
        os.close(fd)
        argv = [cc, *CFLAGS, f"-I{netdir.parent}", f"-I{netdir}", str(netdir / f"{name}.c"), "-o", tmp, *libs]
        res = subprocess.run(argv, capture_output=True, text=True, cwd=netdir)
        if res.returncode != 0:
            os.unlink(tmp)
            raise BuildError(f"{name}: `{' '.join(argv)}` failed:\n{res.stdout}{res.stderr}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
        stamp[name] = digest
        built[name] = True
        (out / STAMP).write_text(json.dumps(stamp, indent=1, sort_keys=True))
    for script in SCRIPTS:
        data = (netdir / script).read_bytes()
        dest = out / script
        if not dest.is_file() or dest.read_bytes() != data:
            fd, tmp = tempfile.mkstemp(prefix=f".{script}.", dir=out)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o755)
            os.replace(tmp, dest)
    return built


def up_to_date(src: Path = DEFAULT_SRC, out: Path = DEFAULT_OUT, cc: str = "gcc") -> list[str]:
    """Programs that are missing or stale in out/ (empty when everything is current)."""
    netdir = src / NET
    try:
        stamp = json.loads((out / STAMP).read_text())
    except (OSError, ValueError):
        stamp = {}
    version = cc_version(cc)
    return [
        name
        for name in SELFTESTS
        if not (out / name).is_file() or stamp.get(name) != _input_hash(netdir, name, version)
    ]


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", type=Path, default=DEFAULT_SRC, help="kernel source tree (default: build/linux)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory (default: build/selftests)")
    p.add_argument("--cc", default=os.environ.get("CC", "gcc"))
    p.add_argument("--force", action="store_true", help="rebuild everything")
    args = p.parse_args(argv)
    if not shutil.which(args.cc):
        print(f"selftests: compiler {args.cc} not found", file=sys.stderr)
        return 2
    try:
        built = build(args.src, args.out, args.cc, args.force)
    except BuildError as exc:
        print(f"selftests: {exc}", file=sys.stderr)
        return 1
    for name, fresh in built.items():
        print(f"{'built' if fresh else 'up to date'}: {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

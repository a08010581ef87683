"""out/<arch>/<profile>/: the images, modules, libfsocket and manifest.json."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import series as series_mod
from .runner import Runner

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


@dataclass
class Manifest:
    kernel_release: str
    arch: str
    profile: str
    source: dict[str, str]
    patches: list[dict[str, str]]
    overlay_hash: str
    tree_input_hash: str
    config_hash: str
    fragments_hash: str
    libfsocket_hash: str
    build_seconds: float
    built_at: str
    tools: dict[str, str] = field(default_factory=dict)

    def write(self, outdir: Path) -> Path:
        path = outdir / MANIFEST
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def read(cls, outdir: Path) -> Manifest | None:
        try:
            return cls(**json.loads((outdir / MANIFEST).read_text()))
        except (OSError, ValueError, TypeError):
            return None


def dir_hash(root: Path, pattern: str = "*") -> str:
    h = hashlib.sha256()
    if root.is_dir():
        for p in sorted(root.rglob(pattern)):
            if p.is_file() and "__pycache__" not in p.parts:
                h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def patch_list(patch_dir: Path) -> list[dict[str, str]]:
    return [{"name": p.name, "sha256": p.sha256} for p in series_mod.read_series(patch_dir)]


def tool_versions(runner: Runner) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name, argv in {
        "gcc": ["gcc", "--version"],
        "make": ["make", "--version"],
        "git": ["git", "--version"],
        "ccache": ["ccache", "--version"],
        "qemu": ["qemu-system-x86_64", "--version"],
    }.items():
        if shutil.which(argv[0]):
            res = runner.run(argv, check=False)
            out[name] = (res.stdout.splitlines() or [""])[0].strip()
    return out


def stage(objdir: Path, outdir: Path, image: str, kver: str) -> None:
    """Copy the kernel image, System.map and .config; lay out boot/vmlinuz-<kver> for virtme-ng."""
    outdir.mkdir(parents=True, exist_ok=True)
    img = objdir / image
    shutil.copy2(img, outdir / img.name)
    shutil.copy2(objdir / "System.map", outdir / "System.map")
    shutil.copy2(objdir / ".config", outdir / ".config")
    boot = outdir / "boot"
    if boot.exists():
        shutil.rmtree(boot)
    boot.mkdir()
    # virtme-ng takes the release from the file name and the modules from ../lib/modules/<kver>.
    os.link(outdir / img.name, boot / f"vmlinuz-{kver}")
    mods = outdir / "lib" / "modules"
    if mods.exists():
        for old in mods.iterdir():
            if old.name != kver:
                shutil.rmtree(old, ignore_errors=True)


def build_libfsocket(src: Path, outdir: Path, runner: Runner, cross: str | None, logfile: Path) -> Path:
    from .errors import BuildError

    cc = f"{cross}gcc" if cross else "gcc"
    res = runner.run(["make", "-C", src, f"OUT={outdir}", f"CC={cc}"], check=False)
    logfile.write_text(res.stdout + res.stderr)
    if not res.ok:
        raise BuildError(
            f"libfsocket failed to build:\n{(res.stdout + res.stderr)[-2000:]}", hint=f"full log: {logfile}"
        )
    return outdir / "libfsocket.so"


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

"""The patch series: patches/series plus NNNN-subsystem-summary.patch files."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import PatchError

NAME_RE = re.compile(r"^\d{4}-[A-Za-z0-9][A-Za-z0-9._-]*\.patch$")


@dataclass(frozen=True)
class Patch:
    name: str
    path: Path

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    def subject(self) -> str | None:
        text = self.path.read_text(errors="replace")
        m = re.search(r"^Subject:\s*(.+(?:\n[ \t].+)*)", text, re.M)
        return " ".join(m.group(1).split()) if m else None


def read_series(patch_dir: Path) -> list[Patch]:
    """The patches in order. A missing series file means an empty series."""
    series = patch_dir / "series"
    if not series.exists():
        return []
    patches = []
    for raw in series.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            patches.append(Patch(line.split()[0], patch_dir / line.split()[0]))
    return patches


def lint(patch_dir: Path) -> list[str]:
    """Problems with the series: listed but missing, present but unlisted, missing headers."""
    problems: list[str] = []
    listed = read_series(patch_dir)
    names = [p.name for p in listed]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"patches/series lists {dup} more than once")
    present = {p.name for p in patch_dir.glob("*.patch")} if patch_dir.is_dir() else set()
    for p in listed:
        if not p.path.is_file():
            problems.append(f"patches/series lists {p.name}, which does not exist")
            continue
        if not NAME_RE.match(p.name):
            problems.append(f"{p.name}: name is not NNNN-subsystem-summary.patch")
        text = p.path.read_text(errors="replace")
        header = text.split("\n---\n", 1)[0]
        if not re.search(r"^Subject: .+", header, re.M):
            problems.append(f"{p.name}: no Subject: header")
        if not re.search(r"^Signed-off-by: .+ <[^>]+>", header, re.M):
            problems.append(f"{p.name}: no Signed-off-by: line before the ---")
        if "\ndiff --git " not in text:
            problems.append(f"{p.name}: contains no diff")
    for name in sorted(present - set(names)):
        problems.append(f"{name} is not listed in patches/series")
    return problems


def check(patch_dir: Path) -> list[Patch]:
    problems = lint(patch_dir)
    if problems:
        raise PatchError(
            "the patch series is malformed:\n  " + "\n  ".join(problems),
            hint="list every patch in patches/series; give each a Subject and Signed-off-by",
        )
    return read_series(patch_dir)


def write_series(patch_dir: Path, names: list[str]) -> None:
    """Rewrite the series, keeping its leading comment block."""
    series = patch_dir / "series"
    head: list[str] = []
    if series.exists():
        for line in series.read_text().splitlines():
            if line.startswith("#") or not line.strip():
                head.append(line)
            else:
                break
    text = "\n".join([*head, *names]) + "\n"
    if not series.exists() or series.read_text() != text:
        series.write_text(text)


def slug(subject: str) -> str:
    """NNNN-less file stem from a subject, as git format-patch would make it."""
    subject = re.sub(r"^\[[^\]]*\]\s*", "", subject)
    s = re.sub(r"[^A-Za-z0-9._]+", "-", subject).strip("-.")
    if len(s) > 52:
        cut = s[:53].rfind("-")
        s = s[:cut] if cut > 20 else s[:52]
    return s.rstrip("-.") or "patch"

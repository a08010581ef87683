"""Config profiles: a base config plus kernel-config/ fragments, resolved by the
kernel's own `make olddefconfig`, then checked symbol by symbol."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

log = logging.getLogger(__name__)

ENTRY_RE = re.compile(r"^CONFIG_(\w+)=(.*)$")
UNSET_RE = re.compile(r"^# CONFIG_(\w+) is not set$")


@dataclass(frozen=True)
class Profile:
    name: str
    base: str  # "tinyconfig" or "defconfig" (the arch's defconfig target)
    fragments: tuple[str, ...]  # kernel-config/ names; "{arch}" is substituted
    description: str

    def fragment_paths(self, frag_dir: Path, arch: str) -> list[Path]:
        paths = []
        for name in self.fragments:
            path = frag_dir / name.format(arch=arch)
            if "{arch}" in name and not path.exists():
                continue  # an arch without extra needs
            if not path.exists():
                raise ConfigError(f"profile {self.name}: fragment {path} is missing")
            paths.append(path)
        return paths


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            "vm",
            "tinyconfig",
            ("vm.config", "vm-{arch}.config", "fastsocket.config", "slick.config"),
            "small; boots fast under QEMU/virtme-ng",
        ),
        Profile(
            "server",
            "defconfig",
            ("server.config", "fastsocket.config", "slick.config"),
            "the arch defconfig plus common server NICs as modules",
        ),
        Profile(
            "debug",
            "tinyconfig",
            ("vm.config", "vm-{arch}.config", "fastsocket.config", "slick.config", "debug.config"),
            "vm plus LOCKDEP, LOCK_STAT, KASAN for reliability tests and lock reports",
        ),
    )
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ConfigError(f"unknown profile {name!r}", hint=f"use one of: {', '.join(PROFILES)}") from None


def parse(text: str, origin: str = "<config>") -> dict[str, str]:
    """CONFIG_X=v and '# CONFIG_X is not set' (as 'n') lines; later ones win."""
    entries: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if m := ENTRY_RE.match(line):
            entries[m.group(1)] = m.group(2)
        elif m := UNSET_RE.match(line):
            entries[m.group(1)] = "n"
        elif line.startswith("#"):
            continue
        else:
            raise ConfigError(
                f"{origin}:{lineno}: not a config line: {raw!r}",
                hint="write CONFIG_NAME=value or '# CONFIG_NAME is not set'",
            )
    return entries


def merge_fragments(paths: list[Path]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for path in paths:
        for name, value in parse(path.read_text(), str(path)).items():
            if name in merged and merged[name] != value:
                log.info("%s overrides CONFIG_%s=%s with %s", path.name, name, merged[name], value)
            merged[name] = value
    return merged


def apply_fragments(base_text: str, requested: dict[str, str]) -> str:
    """base config with every requested symbol replaced or appended."""
    out: list[str] = []
    seen: set[str] = set()
    for line in base_text.splitlines():
        m = ENTRY_RE.match(line) or UNSET_RE.match(line)
        if m and m.group(1) in requested:
            name = m.group(1)
            seen.add(name)
            out.append(_line(name, requested[name]))
        else:
            out.append(line)
    out.extend(_line(n, v) for n, v in requested.items() if n not in seen)
    return "\n".join(out) + "\n"


def _line(name: str, value: str) -> str:
    return f"# CONFIG_{name} is not set" if value == "n" else f"CONFIG_{name}={value}"


@dataclass(frozen=True)
class Mismatch:
    name: str
    wanted: str
    got: str
    why: str


def check(requested: dict[str, str], final: dict[str, str], kconfig: KconfigIndex | None) -> list[Mismatch]:
    """Every requested symbol must have its value in the final config (n == absent)."""
    bad = []
    for name, want in requested.items():
        got = final.get(name, "n")
        if got == want:
            continue
        why = kconfig.explain(name, final, want) if kconfig else ""
        bad.append(Mismatch(name, want, got, why))
    return bad


def format_mismatches(bad: list[Mismatch]) -> str:
    lines = []
    for m in bad:
        lines.append(f"CONFIG_{m.name}: requested {m.wanted}, got {m.got}" + (f": {m.why}" if m.why else ""))
    return "\n  ".join(lines)


def fragments_hash(paths: list[Path], base: str) -> str:
    h = hashlib.sha256(base.encode())
    for p in paths:
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


# -- a small Kconfig scanner, only to explain why a symbol did not take ----------

_CONFIG_RE = re.compile(r"^\s*(?:menu)?config\s+(\w+)\s*$")
_DEPENDS_RE = re.compile(r"^\s*depends\s+on\s+(.+?)\s*$")
_PROMPT_RE = re.compile(r'^\s*(?:(?:bool|tristate|string|int|hex)\s+"|prompt\s+")')
_TYPE_RE = re.compile(r"^\s*(bool|tristate|string|int|hex|def_bool|def_tristate)\b")
_IF_RE = re.compile(r"^\s*if\s+(.+?)\s*$")
_BLOCK_END = re.compile(r"^\s*(?:config|menuconfig|choice|endchoice|menu|endmenu|if|endif|source|comment|mainmenu)\b")


@dataclass
class SymbolInfo:
    depends: list[str]
    has_prompt: bool
    where: str
    type: str = ""


class KconfigIndex:
    """Direct dependencies (depends on + enclosing if/menu) and prompts per symbol."""

    def __init__(self, srctree: Path, srcarch: str) -> None:
        self.symbols: dict[str, SymbolInfo] = {}
        for path in self._kconfig_files(srctree, srcarch):
            self._scan(path, srctree)

    @staticmethod
    def _kconfig_files(srctree: Path, srcarch: str) -> list[Path]:
        files = []
        for path in srctree.rglob("Kconfig*"):
            rel = path.relative_to(srctree).parts
            if rel[0] in ("Documentation", "tools", "scripts") or not path.is_file():
                continue
            if rel[0] == "arch" and len(rel) > 1 and rel[1] not in (srcarch, "Kconfig"):
                continue
            files.append(path)
        return files

    def _scan(self, path: Path, srctree: Path) -> None:
        conds: list[str | None] = []  # if/menu conditions; None for a menu without depends
        current: SymbolInfo | None = None
        menu_open = False
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            return
        for lineno, line in enumerate(lines, 1):
            if m := _CONFIG_RE.match(line):
                current = SymbolInfo([c for c in conds if c], False, f"{path.relative_to(srctree)}:{lineno}")
                self.symbols.setdefault(m.group(1), current)
                menu_open = False
                continue
            stripped = line.strip()
            if m := _IF_RE.match(line):
                conds.append(m.group(1))
                current = None
            elif stripped == "endif" or stripped == "endmenu":
                if conds:
                    conds.pop()
                current = None
            elif stripped.startswith("menu "):
                conds.append(None)
                current = None
                menu_open = True
            elif _BLOCK_END.match(line):
                current = None
                menu_open = False
            elif m := _DEPENDS_RE.match(line):
                if current is not None:
                    current.depends.append(m.group(1))
                elif menu_open and conds and conds[-1] is None:
                    conds[-1] = m.group(1)
            elif current is not None and (t := _TYPE_RE.match(line)):
                current.type = current.type or t.group(1).replace("def_", "")
                if _PROMPT_RE.match(line):
                    current.has_prompt = True
            elif current is not None and _PROMPT_RE.match(line):
                current.has_prompt = True

    def explain(self, name: str, final: dict[str, str], wanted: str | None = None) -> str:
        info = self.symbols.get(name)
        if info is None:
            return "no such symbol in this kernel's Kconfig (misspelt, or removed upstream)"
        if wanted == "m" and info.type == "bool":
            return f"it is a bool, so 'm' is not a valid value: use y [{info.where}]"
        parts = []
        unmet = []
        for expr in info.depends:
            for sym in sorted(set(re.findall(r"\b([A-Z][A-Z0-9_]+)\b", expr))):
                if sym in ("y", "m", "n"):
                    continue
                val = final.get(sym, "n")
                if val == "n" and not re.search(rf"!\s*{sym}\b", expr):
                    unmet.append(f"{sym}=n")
        if info.depends:
            parts.append("depends on " + " && ".join(f"({d})" for d in info.depends))
        if unmet:
            parts.append("unmet: " + ", ".join(dict.fromkeys(unmet)))
        if not info.has_prompt:
            parts.append("it has no prompt, so only a `select` from another symbol can set it")
        return f"{'; '.join(parts) or 'dependencies look met; check a choice or a range'} [{info.where}]"

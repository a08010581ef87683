"""Exact instruction counts per kernel symbol from a QEMU plugin (tools/insncount/).

The plugin counts every guest instruction by translation block on all
vCPUs and writes the counts since the previous snapshot whenever the guest
runs the marker program. Under icount, where a rate is the inverse of the
machine's instructions per event, this says exactly where a variant's
extra instructions go, at any vCPU count (a perf profile there is a time
profile: a vCPU waiting for its turn is sampled where it stopped).

With lines=, the plugin also counts the cache-line transfers between vCPUs
that a write-invalidate cache model sees for kernel memory: the bounces
that the cacheless icount clock does not charge, by the code that caused
them.
"""

from __future__ import annotations

import bisect
import shutil
import struct
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parent / "insncount"
USER = "[user]"
UNKNOWN = "[kernel, unknown]"
KERNEL_BASE = 0xFFFF800000000000  # x86_64: the upper half is the kernel's
MAX_FUNCTION = 1 << 16  # farther than this past the symbol before it, an address names none
MAX_LINE_VCPUS = 15  # the plugin's line model keeps its holders in a 15-bit mask (insncount.c)


@dataclass(frozen=True)
class Tools:
    plugin: Path  # insncount.so, loaded by QEMU on the host
    marker: Path  # fsmark, run in the guest

    def qemu_opts(self, prefix: Path, lines: Path | None = None) -> str:
        """The -plugin option: snapshots go to PREFIX.0, PREFIX.1, ...; with lines, the
        cache-line transfers of the same intervals to LINES.0, LINES.1, ..."""
        for p in (prefix, lines):
            if p and ("," in str(p) or " " in str(p)):
                raise ValueError(f"snapshot prefix {p} may hold neither ',' nor ' '")
        return f"-plugin {self.plugin},out={prefix}" + (f",lines={lines}" if lines else "")


def build(dest: Path) -> Tools:
    """Compile the plugin and the marker into dest (again only when a source is newer)."""
    if not shutil.which("gcc"):
        raise SystemExit("insncount: gcc not found (apt-get install gcc)")
    dest.mkdir(parents=True, exist_ok=True)
    tools = Tools(dest / "insncount.so", dest / "fsmark")
    jobs = (
        (tools.plugin, SRC / "insncount.c", ["-shared", "-fPIC", "-fvisibility=hidden"]),
        (tools.marker, SRC / "marker.c", ["-static"]),
    )
    for out, src, flags in jobs:
        if out.exists() and out.stat().st_mtime >= src.stat().st_mtime:
            continue
        cmd = ["gcc", "-O2", "-Wall", "-Wextra", "-Werror", *flags, "-o", str(out), str(src)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode:
            raise SystemExit(f"insncount: building {src.name} failed:\n{res.stderr}")
    return tools


def read_snapshot(path: Path) -> Counter[int]:
    """PREFIX.k -> instructions (or, from a lines= snapshot, cache-line transfers) by block address."""
    data = path.read_bytes()
    if len(data) % 16:
        raise ValueError(f"{path}: {len(data)} bytes is not a whole number of records")
    counts: Counter[int] = Counter()
    for addr, n in struct.iter_unpack("<QQ", data):
        counts[addr] += n
    return counts


class Kallsyms:
    """Address -> symbol, from the guest's /proc/kallsyms (kptr_restrict=0)."""

    def __init__(self, text: str) -> None:
        syms: dict[int, str] = {}
        for line in text.splitlines():
            parts = line.split()
            if len(parts) < 3 or parts[1] not in "tTwW":
                continue
            addr = int(parts[0], 16)
            name = parts[2] + (f" {parts[3]}" if len(parts) > 3 else "")
            syms.setdefault(addr, name)
        if not syms or max(syms) == 0:
            raise ValueError("kallsyms shows no text addresses (was kptr_restrict 0?)")
        self.addrs = sorted(syms)
        self.names = [syms[a] for a in self.addrs]

    def name(self, addr: int) -> str:
        if addr < KERNEL_BASE:
            return USER
        i = bisect.bisect_right(self.addrs, addr) - 1
        if i < 0 or addr - self.addrs[i] >= MAX_FUNCTION:
            return UNKNOWN
        return self.names[i]


@dataclass(frozen=True)
class Mapping:
    start: int
    end: int
    offset: int
    path: str


def nm_symbols(path: str) -> list[tuple[int, str]]:
    """A file's functions by address (its symbol table, or its dynamic one if stripped)."""
    for flags in (["--defined-only"], ["-D", "--defined-only"]):
        res = subprocess.run(["nm", *flags, path], capture_output=True, text=True, check=False)
        syms = []
        for line in res.stdout.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] in "tTwWiI":
                syms.append((int(parts[0], 16), parts[2]))
        if syms:
            return sorted(syms)
    return []


class UserMaps:
    """User addresses of the processes whose /proc/PID/maps the guest saved: DSO and, where the
    DSO has symbols, function. Addresses in no such process stay "[user]"."""

    def __init__(self, maps_texts: list[str]) -> None:
        found: set[Mapping] = set()
        for text in maps_texts:
            for line in text.splitlines():
                parts = line.split(maxsplit=5)
                if len(parts) == 6 and "x" in parts[1] and parts[5].startswith("/"):
                    lo, hi = (int(x, 16) for x in parts[0].split("-"))
                    found.add(Mapping(lo, hi, int(parts[2], 16), parts[5]))
        self.maps = sorted(found, key=lambda m: m.start)
        self.starts = [m.start for m in self.maps]
        self.syms: dict[str, tuple[list[int], list[str]]] = {}

    def _symbols(self, path: str) -> tuple[list[int], list[str]]:
        if path not in self.syms:
            syms = nm_symbols(path) if Path(path).exists() else []
            self.syms[path] = ([a for a, _ in syms], [n for _, n in syms])
        return self.syms[path]

    def name(self, addr: int) -> str:
        i = bisect.bisect_right(self.starts, addr) - 1
        if i < 0 or addr >= self.maps[i].end:
            return USER
        m = self.maps[i]
        dso = Path(m.path).name
        # GNU ld lays a text segment out at the same address as its file offset.
        addrs, names = self._symbols(m.path)
        j = bisect.bisect_right(addrs, addr - m.start + m.offset) - 1
        return f"[user] {dso}" + (f" {names[j]}" if j >= 0 else "")


def by_symbol(counts: Counter[int], ksyms: Kallsyms, umaps: UserMaps | None = None) -> Counter[str]:
    out: Counter[str] = Counter()
    for addr, n in counts.items():
        out[umaps.name(addr) if umaps and addr < KERNEL_BASE else ksyms.name(addr)] += n
    return out


def break_even(d_insns: float, d_lines: float) -> str:
    """What a variant's changes in instructions and in cache-line transfers per event (variant minus
    stock) add up to, as the cost of one transfer, in instruction times, at which the two balance."""
    if d_insns == 0 and d_lines == 0:
        return "the same instructions and transfers"
    changed = " and ".join(
        f"{'fewer' if d < 0 else 'more'} {name}" for d, name in ((d_insns, "instructions"), (d_lines, "transfers")) if d
    )
    if d_insns <= 0 and d_lines <= 0:
        return f"{changed}: cheaper whatever a transfer costs"
    if d_insns >= 0 and d_lines >= 0:
        return f"{changed}: dearer whatever a transfer costs"
    cost = abs(d_insns / d_lines)
    if d_lines < 0:
        return f"cheaper wherever a cache-line transfer costs more than {cost:.1f} instruction times"
    return f"cheaper only while a cache-line transfer costs less than {cost:.1f} instruction times"

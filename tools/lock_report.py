#!/usr/bin/env python3
"""Lock report: /proc/lock_stat and perf lock contention for a short-connection workload, stock vs fastsocket.

    python3 tools/lock_report.py            # needs both kernels: build.py, and build.py --profile debug

All runs use the same prefork server (tools/workloads/shortconn.py: one
worker per CPU, pinned, sharing one listener): "stock" as it is, "portable"
under LD_PRELOAD=libfsocket.so without fastsocket.ko (per-worker
SO_REUSEPORT siblings with SO_INCOMING_CPU), "fastsocket" under the library
with the module (local listeners). Prints acq-bounces and con-bounces per
1,000 connections for the listen/accept path locks and the top lock
classes, the ratios to stock, and saves the data (JSON, raw lock_stat) and
a plot under out/reports/.

lock_stat counts per lock class (all sockets' sk_lock share one class), and
LOCKDEP/KASAN slow everything down: read the counts, not the speed.

A second boot, of the vm kernel (no lock debugging), runs the same three
variants under `perf lock record` (the lock:contention_begin/end
tracepoints) and reports `perf lock contention`: contended acquisitions
per 1,000 connections and wait time, by the function that waited. Skip it
with --no-perf.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from guestrun import REPO, results_dir, run_guest

# Lock classes on the passive open, accept and listener paths.
LISTEN_PATH = re.compile(r"rskq_lock|lhash2|reuseport_lock|sk_lock-AF_INET|slock-AF_INET|icsk_accept_queue")
# Every socket and epoll lock a short connection takes (the listen path, bind
# buckets, ehash, socket wait queues, deferred skb frees, epoll).
SOCKET_EPOLL = re.compile(LISTEN_PATH.pattern + r"|clock-AF_INET|bhash|&ptr\[i\]|socket\.wq|defer_lock|&ep->")
VARIANTS = ("stock", "portable", "fastsocket")


@dataclass
class LockClass:
    name: str
    con_bounces: int
    contentions: int
    acq_bounces: int
    acquisitions: int


def parse_lock_stat(text: str) -> dict[str, LockClass]:
    """Class rows of /proc/lock_stat (version 0.4); a class listed twice (e.g. -R/-W) is summed."""
    out: dict[str, LockClass] = {}
    for line in text.splitlines():
        m = re.match(r"^\s*(.+?):\s+(\d+)\s+(\d+)\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+(\d+)\s+(\d+)\s", line)
        if not m or line.lstrip().startswith(("class name", "lock_stat")):
            continue
        name = m.group(1).strip()
        cur = out.setdefault(name, LockClass(name, 0, 0, 0, 0))
        cur.con_bounces += int(m.group(2))
        cur.contentions += int(m.group(3))
        cur.acq_bounces += int(m.group(4))
        cur.acquisitions += int(m.group(5))
    return out


def guest_script(conns: int) -> str:
    lib = REPO / "out/x86_64/debug/libfsocket.so"
    lines = ["test -e /proc/lock_stat || { echo 'no /proc/lock_stat: boot the debug profile'; exit 2; }"]
    for variant in VARIANTS:
        preload = "" if variant == "stock" else f"LD_PRELOAD={lib} "
        run = f"{preload}python3 {REPO}/tools/workloads/shortconn.py --conns {conns}"
        load = "modprobe fastsocket" if variant == "fastsocket" else "modprobe -r fastsocket 2>/dev/null || true"
        lines += [
            load,
            f"{run} --port 8401 --conns 5 > /dev/null",  # warm-up: caches, first-time allocations
            "echo 0 > /proc/lock_stat; echo 1 > /proc/sys/kernel/lock_stat",
            f"{run} > $OUT/{variant}.json",
            f"echo 0 > /proc/sys/kernel/lock_stat; cat /proc/lock_stat > $OUT/{variant}.lock_stat",
            f"cat /proc/net/fastsocket > $OUT/{variant}.fastsocket 2>/dev/null || true",
        ]
    lines.append("modprobe -r fastsocket 2>/dev/null || true")
    return "\n".join(lines)


@dataclass
class Contention:
    caller: str
    kind: str
    contended: int
    wait_total_ns: float


UNITS_NS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9, "m": 60e9, "h": 3600e9}
_TIME = r"([\d.]+)\s*(ns|us|ms|s|m|h)"


def parse_contention(text: str) -> dict[str, Contention]:
    """Rows of `perf lock contention` (contended, total/max/avg wait, type, caller); a caller listed twice is summed."""
    out: dict[str, Contention] = {}
    row = re.compile(rf"^\s*(\d+)\s+{_TIME}\s+{_TIME}\s+{_TIME}\s+(\S+)\s+(\S.*?)\s*$")
    for line in text.splitlines():
        m = row.match(line)
        if not m:
            continue
        caller = m.group(9)
        cur = out.setdefault(caller, Contention(caller, m.group(8), 0, 0.0))
        cur.contended += int(m.group(1))
        cur.wait_total_ns += float(m.group(2)) * UNITS_NS[m.group(3)]
    return out


def perf_guest_script(conns: int, lib: Path) -> str:
    """perf lock record / contention for each variant on a kernel with the lock contention tracepoints."""
    ev = "/sys/kernel/tracing/events/lock/contention_begin"
    lines = [
        f"test -d {ev} || mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true",
        f"test -d {ev} || {{ echo 'no lock:contention_begin tracepoint: rebuild the vm profile"
        " (kernel-config/vm.config sets CONFIG_FTRACE)'; exit 2; }",
        "command -v perf > /dev/null || { echo 'no perf in the guest: apt-get install linux-perf'; exit 2; }",
    ]
    for variant in VARIANTS:
        preload = "" if variant == "stock" else f"LD_PRELOAD={lib} "
        run = f"python3 {REPO}/tools/workloads/shortconn.py --conns {conns}"
        load = "modprobe fastsocket" if variant == "fastsocket" else "modprobe -r fastsocket 2>/dev/null || true"
        lines += [
            load,
            f"{preload}{run} --port 8401 --conns 5 > /dev/null",
            f"perf lock record -a -o /tmp/{variant}.data -- env {preload}{run} > $OUT/perf-{variant}.json"
            f" 2> $OUT/perf-{variant}.record.err",
            f"perf lock contention -i /tmp/{variant}.data -E 1000 > $OUT/perf-{variant}.contention 2>&1",
        ]
    lines.append("modprobe -r fastsocket 2>/dev/null || true")
    return "\n".join(lines)


def perf_report(outdir: Path) -> dict:
    data: dict = {"variants": {}}
    for variant in VARIANTS:
        conns = json.loads((outdir / f"perf-{variant}.json").read_text())["connections"]
        rows = parse_contention((outdir / f"perf-{variant}.contention").read_text())
        data["variants"][variant] = {
            "connections": conns,
            "contended_per_kconn": per_kconn(sum(r.contended for r in rows.values()), conns),
            "wait_us_per_conn": round(sum(r.wait_total_ns for r in rows.values()) / 1e3 / conns, 2),
            "callers": {r.caller: asdict(r) for r in rows.values()},
        }
    (outdir / "perf-contention.json").write_text(json.dumps(data, indent=1))
    return data


def print_perf_table(data: dict, top: int = 15) -> list[str]:
    vs = data["variants"]
    conns = {v: vs[v]["connections"] for v in VARIANTS}

    def val(v: str, caller: str) -> float:
        c = vs[v]["callers"].get(caller)
        return per_kconn(c["contended"], conns[v]) if c else 0.0

    names = set().union(*(vs[v]["callers"] for v in VARIANTS))
    shown = sorted(names, key=lambda n: -max(val(v, n) for v in VARIANTS))[:top]
    cols = "".join(f"{v[:9]:>10}" for v in VARIANTS)
    print(f"\nperf lock contention: contended per 1,000 connections, by waiting function{'':5}{cols}")
    for n in shown:
        print(f"  {n[:76]:76}" + "".join(f"{val(v, n):10.1f}" for v in VARIANTS))
    print(
        "all contended acquisitions per 1,000 connections: "
        + ", ".join(f"{v} {vs[v]['contended_per_kconn']}" for v in VARIANTS)
        + "; lock wait per connection, us: "
        + ", ".join(f"{v} {vs[v]['wait_us_per_conn']}" for v in VARIANTS)
    )
    return shown


def plot_perf(data: dict, shown: list[str], path: Path) -> None:
    vs = data["variants"]
    vals = {
        v: [per_kconn(vs[v]["callers"].get(n, {}).get("contended", 0), vs[v]["connections"]) for n in shown]
        for v in VARIANTS
    }
    plot_bars(
        shown,
        vals,
        "contended lock acquisitions per 1,000 connections (perf lock contention)",
        "Short connections, prefork server, 1 worker per CPU (vm kernel)",
        path,
    )


def per_kconn(value: int, conns: int) -> float:
    return round(1000.0 * value / conns, 1)


def report(outdir: Path) -> dict:
    data: dict = {"variants": {}}
    for variant in VARIANTS:
        work = json.loads((outdir / f"{variant}.json").read_text())
        classes = parse_lock_stat((outdir / f"{variant}.lock_stat").read_text())
        conns = work["connections"]
        listen = [c for c in classes.values() if LISTEN_PATH.search(c.name)]
        data["variants"][variant] = {
            "workload": work,
            "listen_path": {
                "acq_bounces_per_kconn": per_kconn(sum(c.acq_bounces for c in listen), conns),
                "con_bounces_per_kconn": per_kconn(sum(c.con_bounces for c in listen), conns),
            },
            "socket_epoll": {
                "acq_bounces_per_conn": round(
                    sum(c.acq_bounces for c in classes.values() if SOCKET_EPOLL.search(c.name)) / conns, 2
                ),
            },
            "all_classes": {
                "acq_bounces_per_conn": round(sum(c.acq_bounces for c in classes.values()) / conns, 2),
            },
            "classes": {c.name: asdict(c) for c in classes.values()},
        }
    sa = data["variants"]["stock"]["listen_path"]["acq_bounces_per_kconn"]
    for v in VARIANTS[1:]:
        va = data["variants"][v]["listen_path"]["acq_bounces_per_kconn"]
        data[f"listen_path_acq_bounce_ratio_{v}"] = round(va / sa, 3) if sa else None
    (outdir / "report.json").write_text(json.dumps(data, indent=1))
    return data


def print_table(data: dict) -> list[str]:
    vs = data["variants"]
    names = set().union(*(vs[v]["classes"] for v in VARIANTS))
    conns = {v: vs[v]["workload"]["connections"] for v in VARIANTS}

    def val(v: str, name: str, field: str) -> float:
        c = vs[v]["classes"].get(name)
        return per_kconn(c[field], conns[v]) if c else 0.0

    top = sorted(names, key=lambda n: -max(val(v, n, "acq_bounces") for v in VARIANTS))
    shown = [n for n in top if LISTEN_PATH.search(n)] + [n for n in top[:12] if not LISTEN_PATH.search(n)]
    cols = "".join(f"{v[:9]:>10}" for v in VARIANTS)
    print(f"{'acq-bounces per 1,000 connections':46}{cols}   | con-bounces{cols}")
    for n in shown:
        a = "".join(f"{val(v, n, 'acq_bounces'):10.1f}" for v in VARIANTS)
        c = "".join(f"{val(v, n, 'con_bounces'):10.1f}" for v in VARIANTS)
        mark = "*" if LISTEN_PATH.search(n) else " "
        print(f"{mark}{n[:45]:45}{a}   |            {c}")
    lp = {v: vs[v]["listen_path"]["acq_bounces_per_kconn"] for v in VARIANTS}
    print(
        "\n* listen/accept path acq-bounces per 1,000 connections: "
        + ", ".join(f"{v} {lp[v]}" for v in VARIANTS)
        + "; ratio to stock: "
        + ", ".join(f"{v} {data[f'listen_path_acq_bounce_ratio_{v}']}" for v in VARIANTS[1:])
    )
    print(
        "socket and epoll locks, acq-bounces per connection: "
        + ", ".join(f"{v} {vs[v]['socket_epoll']['acq_bounces_per_conn']}" for v in VARIANTS)
    )
    print(
        "all lock classes (with the 9p root, RCU, scheduler), acq-bounces per connection: "
        + ", ".join(f"{v} {vs[v]['all_classes']['acq_bounces_per_conn']}" for v in VARIANTS)
    )
    print(
        "locality share (accepted on the SYN's CPU): "
        + ", ".join(f"{v} {vs[v]['workload']['local_share']}" for v in VARIANTS)
        + "\nconnections/s under the debug kernel (LOCKDEP+KASAN, TCG: not a benchmark): "
        + ", ".join(f"{v} {vs[v]['workload']['cps']}" for v in VARIANTS)
    )
    return shown


def plot_bars(names: list[str], vals: dict[str, list[float]], xlabel: str, title: str, path: Path) -> None:
    """One group of horizontal bars per name, one bar per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 0.55 * max(len(names), 1) + 1.5))
    y = range(len(names))
    for k, v in enumerate(VARIANTS):
        ax.barh([i + (k - 1) * 0.27 for i in y], vals[v], height=0.27, label=v)
    ax.set_yticks(list(y), [n[:45] for n in names], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot(data: dict, shown: list[str], path: Path) -> None:
    conns = {v: data["variants"][v]["workload"]["connections"] for v in VARIANTS}
    vals = {
        v: [per_kconn(data["variants"][v]["classes"].get(n, {}).get("acq_bounces", 0), conns[v]) for n in shown]
        for v in VARIANTS
    }
    plot_bars(
        shown,
        vals,
        "lock acq-bounces per 1,000 connections (lock_stat)",
        "Short connections, prefork server, 1 worker per CPU",
        path,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel-dir", type=Path, default=REPO / "out/x86_64/debug")
    ap.add_argument(
        "--perf-kernel-dir", type=Path, default=REPO / "out/x86_64/vm", help="kernel for perf lock contention"
    )
    ap.add_argument("--no-perf", action="store_true", help="skip the perf lock contention boot")
    ap.add_argument(
        "--perf-conns", type=int, default=1000, help="connections per CPU under perf (default 1000: contention is rare)"
    )
    ap.add_argument("--conns", type=int, default=150, help="connections per CPU (default 150)")
    ap.add_argument("--from-dir", type=Path, help="re-report an earlier run's directory without booting")
    args = ap.parse_args()
    if args.conns < 1 or args.perf_conns < 1:
        ap.error("--conns and --perf-conns must be at least 1")
    if args.from_dir:
        outdir = args.from_dir
    else:
        if not (args.kernel_dir / "manifest.json").exists():
            ap.error(f"no kernel in {args.kernel_dir}: run `python3 build.py --profile debug` first")
        if not args.no_perf and not (args.perf_kernel_dir / "manifest.json").exists():
            ap.error(f"no kernel in {args.perf_kernel_dir}: run `python3 build.py` first (or pass --no-perf)")
        if not args.no_perf and not shutil.which("perf"):
            ap.error("no perf (the guest uses the host's): apt-get install linux-perf (or pass --no-perf)")
        outdir = results_dir("lockstat")
        run_guest(args.kernel_dir, guest_script(args.conns), outdir)
        if not args.no_perf:
            lib = args.perf_kernel_dir / "libfsocket.so"
            run_guest(args.perf_kernel_dir, perf_guest_script(args.perf_conns, lib), outdir, tag="perf")
    data = report(outdir)
    shown = print_table(data)
    plot(data, shown, outdir / "lockstat.png")
    if (outdir / f"perf-{VARIANTS[-1]}.contention").exists():
        pdata = perf_report(outdir)
        plot_perf(pdata, print_perf_table(pdata), outdir / "contention.png")
    print(f"\ndata and plot: {outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

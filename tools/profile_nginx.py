#!/usr/bin/env python3
"""Where a variant's extra work per connection goes: instructions per request by kernel symbol, stock vs a variant.

    python3 tools/profile_nginx.py [--variant fastsocket] [--cpus 2] [--method count|perf]

Runs the nginx short-connection workload of bench_nginx.py in one guest
under the instruction-counting clock (icount), stock and the variant
interleaved for --rounds rounds, and prints where their instructions per
request differ, largest first.

--method count (default): a QEMU plugin (tools/insncount/) counts every
instruction each vCPU executes during a run: by kernel symbol, by DSO and
function for nginx's user space ("[user] libc.so.6 memcpy"), and as one
row, "[user]", for the rest of user space (wrk). The counts are exact at
any vCPU count. With --lines the plugin also counts the cache-line
transfers between vCPUs that kernel loads and stores cause (a model of
per-vCPU caches; see tools/insncount.py), by the symbol that caused them.

--method perf: `perf record -a` samples every --period instructions, split
by comm and symbol (--by sym), DSO or comm. Samples that fall while
interrupts are off are charged to where they come back on, and with more
than one vCPU the split is a time profile: QEMU runs an icount guest's
vCPUs in turn, and a vCPU waiting for its turn is sampled where it stopped.

Saves the raw data and a JSON summary under out/reports/.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_nginx import VARIANTS, client_network, parse_wrk, start_nginx, warm_up
from guestrun import REPO, results_dir, run_guest
from insncount import MAX_LINE_VCPUS, Kallsyms, UserMaps, break_even, by_symbol, read_snapshot
from insncount import build as build_insncount

REPORT_LINE = re.compile(r"\s*[\d.]+%\s+(\d+)\s+(\S+)\s+(\S+)\s+\[.\]\s+(.+?)\s*$")
KEYS = {"sym": (0, 2), "dso": (0, 1), "comm": (0,)}


def parse_perf_report(text: str) -> Counter[tuple[str, str, str]]:
    """`perf report --stdio -n --sort comm,dso,sym` rows -> samples by (comm, dso, symbol)."""
    rows: Counter[tuple[str, str, str]] = Counter()
    for line in text.splitlines():
        m = REPORT_LINE.match(line)
        if m:
            rows[(m.group(2), m.group(3), m.group(4))] += int(m.group(1))
    return rows


def per_thousand(rows: Counter[tuple[str, str, str]], requests: int, by: str) -> dict[tuple[str, ...], float]:
    """Samples per 1,000 requests, grouped by the fields `by` names."""
    if requests <= 0:
        raise ValueError("no requests completed: nothing to divide by")
    out: Counter[tuple[str, ...]] = Counter()
    for key, n in rows.items():
        out[tuple(key[i] for i in KEYS[by])] += n
    return {k: v * 1000 / requests for k, v in out.items()}


def diff_table(base: dict, other: dict, top: int) -> list[tuple[tuple[str, ...], float, float, float]]:
    """(key, base, other, other - base), the largest differences first."""
    keys = sorted(set(base) | set(other), key=lambda k: -abs(other.get(k, 0) - base.get(k, 0)))
    return [(k, base.get(k, 0.0), other.get(k, 0.0), other.get(k, 0.0) - base.get(k, 0.0)) for k in keys[:top]]


def guest_script(kernel_dir: Path, variant: str, cpus: int, seconds: int, rounds: int, period: int) -> str:
    lib = kernel_dir / "libfsocket.so"
    lines = [
        "ulimit -n 65536",
        "echo 0 > /proc/sys/kernel/kptr_restrict",
        "echo -1 > /proc/sys/kernel/perf_event_paranoid",
    ]
    addr = "127.0.0.1"
    for r in range(rounds):
        for v in ("stock", variant) if r % 2 == 0 else (variant, "stock"):
            tag = f"{v}-{r}"
            lines += [
                *start_nginx(v, lib, cpus, addr),
                f"perf record -q -a -e cpu-clock -c {period} -o /tmp/{tag}.data --"
                f" wrk -t{cpus} -c{4 * cpus} -d{seconds}s -H 'Connection: close' http://{addr}:8088/index.html"
                f" > $OUT/{tag}.wrk",
                "kill $NGINX; wait $NGINX || true",
                f"perf report -i /tmp/{tag}.data --stdio -n --sort comm,dso,sym > $OUT/{tag}.perf 2>/dev/null",
                f"rm -f /tmp/{tag}.data",
            ]
    return "\n".join(lines)


def count_script(
    kernel_dir: Path,
    variant: str,
    cpus: int,
    seconds: int,
    rounds: int,
    marker: Path,
    client_cpus: int = 0,
    per_cpu: int = 4,
) -> str:
    """Like guest_script, but each wrk run sits between two markers: the plugin's snapshots 2i+1 are run i.

    client_cpus: wrk behind a veth pair with RPS, on that many vCPUs of its own (0: loopback, beside nginx)."""
    lib = kernel_dir / "libfsocket.so"
    net = "veth" if client_cpus else "loopback"
    net_lines, addr, client, server, threads = client_network(cpus, net, client_cpus)
    lines = ["ulimit -n 65536", "echo 0 > /proc/sys/kernel/kptr_restrict", *net_lines]
    lines += warm_up(lib, cpus, addr, client, server, threads, per_cpu * cpus, seconds)
    for tag in run_order(variant, rounds):
        lines += [
            *start_nginx(tag.rsplit("-", 1)[0], lib, cpus, addr, client, server),
            f"{marker}",
            f"{client}wrk -t{threads} -c{per_cpu * cpus} -d{seconds}s -H 'Connection: close'"
            f" http://{addr}:8088/index.html > $OUT/{tag}.wrk",
            f"{marker}",
            f"cat /proc/kallsyms > $OUT/{tag}.kallsyms",
            "for p in $NGINX $(cat /proc/$NGINX/task/$NGINX/children); do",
            f"  cat /proc/$p/maps > $OUT/{tag}.maps.$p",
            "done",
            "kill $NGINX; wait $NGINX || true",
        ]
    return "\n".join(lines)


def run_order(variant: str, rounds: int) -> list[str]:
    """Tags of the runs in guest order: stock and the variant, alternating which goes first."""
    return [f"{v}-{r}" for r in range(rounds) for v in (("stock", variant) if r % 2 == 0 else (variant, "stock"))]


def collect_counts(
    outdir: Path, variant: str, rounds: int, by_dso: bool = True, stem: str = "insns"
) -> dict[str, dict]:
    """Instructions (stem insns) or cache-line transfers (stem lines) per request by symbol, from the
    plugin's snapshots (odd ones: during a run).

    by_dso: split nginx's user-space instructions by DSO and function (the rest of user space,
    wrk's, stays "[user]")."""
    order = run_order(variant, rounds)
    snaps = sorted(outdir.glob(f"{stem}.*"), key=lambda p: int(p.suffix[1:]))
    if len(snaps) != 2 * len(order):
        what = "instruction" if stem == "insns" else stem
        raise SystemExit(f"expected {2 * len(order)} {what} snapshots in {outdir}, found {len(snaps)}")
    data: dict[str, dict] = {v: {"requests": 0, "insns": Counter()} for v in ("stock", variant)}
    for i, tag in enumerate(order):
        v = tag.rsplit("-", 1)[0]
        ksyms = Kallsyms((outdir / f"{tag}.kallsyms").read_text())
        umaps = UserMaps([p.read_text() for p in sorted(outdir.glob(f"{tag}.maps.*"))]) if by_dso else None
        data[v]["requests"] += parse_wrk((outdir / f"{tag}.wrk").read_text())["requests"]
        data[v]["insns"].update(by_symbol(read_snapshot(outdir / f"{stem}.{2 * i + 1}"), ksyms, umaps))
    for d in data.values():
        if d["requests"] <= 0:
            raise SystemExit("a variant completed no requests: nothing to divide by")
        d["per_request"] = {k: n / d["requests"] for k, n in d.pop("insns").items()}
    return data


def main_count(args: argparse.Namespace) -> int:
    outdir = results_dir(f"profile-{args.variant}")
    tools = build_insncount(REPO / "out" / "tools" / "insncount")
    script = count_script(
        args.kernel_dir,
        args.variant,
        args.cpus,
        args.seconds,
        args.rounds,
        tools.marker,
        args.client_cpus,
        args.connections_per_cpu,
    )
    run_guest(
        args.kernel_dir,
        script,
        outdir,
        cpus=args.cpus + args.client_cpus,
        accel="icount",
        timeout=3600 * (3 if args.lines else 1),
        qemu_opts=tools.qemu_opts(outdir / "insns", outdir / "lines" if args.lines else None),
    )
    titles = {
        "insns": "instructions per request (exact, every vCPU)",
        "lines": "cache-line transfers between vCPUs per request (kernel memory, write-invalidate model)",
    }
    result = {}
    for stem in ("insns", "lines") if args.lines else ("insns",):
        data = collect_counts(outdir, args.variant, args.rounds, stem=stem)
        base, other = data["stock"]["per_request"], data[args.variant]["per_request"]
        tb, to = sum(base.values()), sum(other.values())
        print(f"\n{titles[stem]}, {args.cpus} vCPU, icount")
        ratio = f"{to / tb:.4f}x" if tb else "stock has none"
        print(f"total: stock {tb:.1f}, {args.variant} {to:.1f} ({ratio}, {to - tb:+.1f} per request)")
        print(f"{'diff':>9} {'stock':>9} {args.variant:>11}  symbol")
        for key, b, o, d in diff_table(base, other, args.top):
            print(f"{d:+9.1f} {b:9.1f} {o:11.1f}  {key}")
        result["instructions" if stem == "insns" else "line_transfers"] = data
        totals = [sum(data[v]["per_request"].values()) for v in ("stock", args.variant)]
        result[f"{stem}_difference"] = totals[1] - totals[0]
    if args.lines:
        result["break_even"] = break_even(result["insns_difference"], result["lines_difference"])
        print(f"\n{args.variant} against stock: {result['break_even']}")
    (outdir / "profile.json").write_text(json.dumps(result, indent=1))
    print(f"\nsnapshots and data: {outdir}")
    return 0


def collect(outdir: Path, variant: str, rounds: int, by: str) -> dict[str, dict]:
    data: dict[str, dict] = {}
    for v in ("stock", variant):
        rows: Counter[tuple[str, str, str]] = Counter()
        requests = 0
        for r in range(rounds):
            requests += parse_wrk((outdir / f"{v}-{r}.wrk").read_text())["requests"]
            rows.update(parse_perf_report((outdir / f"{v}-{r}.perf").read_text()))
        data[v] = {"requests": requests, "per_1000": per_thousand(rows, requests, by)}
    return data


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel-dir", type=Path, default=REPO / "out/x86_64/vm")
    ap.add_argument("--variant", choices=[v for v in VARIANTS if v != "stock"], default="fastsocket")
    ap.add_argument("--method", choices=("count", "perf"), default="count")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--seconds", type=int, default=3, help="per run (default 3)")
    ap.add_argument("--rounds", type=int, default=2, help="runs per variant, interleaved (default 2)")
    ap.add_argument("--period", type=int, default=20000, help="instructions per sample (default 20000)")
    ap.add_argument("--by", choices=tuple(KEYS), default="sym", help="--method perf only")
    ap.add_argument(
        "--lines",
        action="store_true",
        help="--method count only: also count cache-line transfers between vCPUs in kernel memory (QEMU 2-5x slower)",
    )
    ap.add_argument(
        "--client-cpus",
        type=int,
        default=0,
        metavar="K",
        help="--method count only: wrk in another namespace behind a veth pair with RPS, on K vCPUs of its own"
        " (default 0: over loopback beside nginx)",
    )
    ap.add_argument(
        "--connections-per-cpu", type=int, default=4, metavar="K", help="wrk connections per nginx vCPU (default 4)"
    )
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args()
    if min(args.cpus, args.seconds, args.rounds, args.top) < 1 or args.period < 1000:
        ap.error("--cpus, --seconds, --rounds and --top must be at least 1, --period at least 1000")
    if args.client_cpus < 0 or not 1 <= args.connections_per_cpu <= 1000:
        ap.error("--client-cpus must be 0 or more and --connections-per-cpu 1 to 1000")
    if args.client_cpus and args.method != "count":
        ap.error("--client-cpus needs --method count")
    if args.lines and args.cpus + args.client_cpus > MAX_LINE_VCPUS:
        ap.error(f"--lines models at most {MAX_LINE_VCPUS} vCPUs: --cpus plus --client-cpus is more")
    if args.connections_per_cpu != 4 and args.method != "count":
        ap.error("--connections-per-cpu needs --method count (the perf method keeps 4 per vCPU)")
    if args.lines and args.method != "count":
        ap.error("--lines needs --method count (the counting plugin models the caches)")
    if not (args.kernel_dir / "manifest.json").exists():
        ap.error(f"no kernel in {args.kernel_dir}: run `python3 build.py` first")
    if args.method == "count":
        return main_count(args)
    outdir = results_dir(f"profile-{args.variant}")
    script = guest_script(args.kernel_dir, args.variant, args.cpus, args.seconds, args.rounds, args.period)
    run_guest(args.kernel_dir, script, outdir, cpus=args.cpus, accel="icount", timeout=3600)
    data = collect(outdir, args.variant, args.rounds, args.by)
    base, other = data["stock"]["per_1000"], data[args.variant]["per_1000"]
    tb, to = sum(base.values()), sum(other.values())
    print(f"samples per 1,000 requests (1 sample = {args.period} instructions), {args.cpus} vCPU, icount")
    print(
        f"total: stock {tb:.0f}, {args.variant} {to:.0f} ({to / tb:.4f}x,"
        f" {(to - tb) * args.period / 1000:+.0f} instructions per request)"
    )
    print(f"{'diff':>9} {'stock':>9} {args.variant:>11}  {args.by}")
    for key, b, o, d in diff_table(base, other, args.top):
        print(f"{d:+9.1f} {b:9.1f} {o:11.1f}  {' '.join(key)}")
    (outdir / "profile.json").write_text(
        json.dumps({v: {" ".join(k): n for k, n in d["per_1000"].items()} for v, d in data.items()}, indent=1)
    )
    print(f"\nperf reports and data: {outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

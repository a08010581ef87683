#!/usr/bin/env python3
"""Where a variant's extra work per connection goes: perf samples per 1,000 requests, stock vs a variant.

    python3 tools/profile_nginx.py [--variant fastsocket] [--cpus 1] [--by sym|dso|comm]

Runs the nginx short-connection workload of bench_nginx.py in one guest
under the instruction-counting clock (icount), stock and the variant
interleaved for --rounds rounds, each under `perf record -a` sampling every
--period guest nanoseconds, which under icount is every --period
instructions. Prints, per comm and symbol (or DSO, or comm), the samples
per 1,000 requests of both and their difference, largest first: a sample
stands for --period instructions, so +5 at the default period is about 100
more instructions per request. Samples that fall while interrupts are off
are charged to where they come back on (handle_softirqs, a syscall's
return), so read single symbols with care and totals per comm or DSO with
confidence. That holds at --cpus 1. With more vCPUs, QEMU runs an icount
guest's vCPUs in turn on one host thread and the clock counts the
instructions of all of them: the total per request stays exact, but each
vCPU is sampled at the same rate whether it executes or waits for its
turn, so the split by comm and symbol becomes a time profile. Saves the
perf reports and a JSON summary under out/reports/.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_nginx import VARIANTS, parse_wrk, start_nginx
from guestrun import REPO, results_dir, run_guest

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
    ap.add_argument("--cpus", type=int, default=1)
    ap.add_argument("--seconds", type=int, default=3, help="per run (default 3)")
    ap.add_argument("--rounds", type=int, default=2, help="runs per variant, interleaved (default 2)")
    ap.add_argument("--period", type=int, default=20000, help="instructions per sample (default 20000)")
    ap.add_argument("--by", choices=tuple(KEYS), default="sym")
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args()
    if min(args.cpus, args.seconds, args.rounds, args.top) < 1 or args.period < 1000:
        ap.error("--cpus, --seconds, --rounds and --top must be at least 1, --period at least 1000")
    if not (args.kernel_dir / "manifest.json").exists():
        ap.error(f"no kernel in {args.kernel_dir}: run `python3 build.py` first")
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

#!/usr/bin/env python3
"""HAProxy proxy benchmark: stock vs fastsocket (RFD), one guest boot.

    python3 tools/bench_proxy.py [--seconds 5] [--rounds 3]                  # vm kernel: CPS + locality
    python3 tools/bench_proxy.py --kernel-dir out/x86_64/debug               # + /proc/lock_stat figures

Debian's HAProxy (one thread per vCPU, pinned) runs in network namespace pxC
and proxies every request over a new backend connection (option httpclose,
http-reuse never) to Debian's nginx in pxS, across a veth pair with RPS
spreading flows over every CPU on both ends. wrk in pxC opens one client
connection per request. Variants, interleaved in rotated order:
  stock       no module, no preload
  fastsocket  fastsocket.ko loaded (rfd_ports=1, rfd_steer=2), HAProxy under
              LD_PRELOAD=libfsocket.so (RFD ports on its backend connects)
  fastsocket-ehash  the same with ehash_partition=1 (per-CPU partition of the
              established table; once it has been on, established lookups
              that miss also try the other hash, in later stock rounds too)
and, with --variants, to take the cost apart:
  fastsocket-listen   the module and the preload with FSOCKET_RFD=0: local
              listeners for the frontend only, no RFD ports, no steering
  fastsocket-nosteer  the module with rfd_steer=0: RFD ports, no steering
  stock-again  stock once more in every round: the A/A control, whose ratio
              to stock is the noise floor of the other ratios
For each variant: proxied connections/s (median of the rounds), the
active-connection locality share (tools/workloads/rfdprobe.py: pinned
clients in pxC, share of replies processed on the connecting CPU), the
/proc/net/fastsocket counters, and, on a kernel with /proc/lock_stat, the
acq-bounces per proxied request of every lock class. Prints the table and
ratios to stock; saves JSON and a plot under out/reports/proxy-*/.
Under TCG (no KVM) the CPS figures are weak evidence: read the event counts.
--client-cpus K boots K more vCPUs and puts wrk (in namespace pxW, across a
third veth pair) and the nginx backend on them, HAProxy and its RPS on the
first --cpus: the proxy box alone on its CPUs, as in production, where
clients and backends are other machines.
--profile N (with --accel icount) samples every CPU every N instructions
during the wrk runs (perf record -a) and prints, for each variant, where
its instructions per proxied request differ from stock's, by comm and by
symbol: the way to take a CPS difference apart. Sampling costs CPS, so
read the CPS figures of a profiled run only against each other. QEMU runs
an icount guest's vCPUs in turn on one host thread, and the clock counts
the instructions of all of them: the total per request is exact (it is
what the CPS ratio measures), while the split by comm and symbol is a time
profile: a vCPU waiting for its turn is sampled where it stopped.
--count (icount) has no such limit: a QEMU plugin (tools/insncount/)
counts every instruction where it executes, during each wrk run, and the
report prints each variant's instructions per proxied request by kernel
symbol and by HAProxy's DSO and function ("[user]" is the rest of user
space: wrk and nginx), largest differences to stock first.
--lines (with --count) has the plugin also follow every kernel load and
store through a model of per-vCPU caches and count the cache-line
transfers between vCPUs per proxied request, by the symbol whose access
caused them: the cross-core bounces that icount's clock does not charge
(and that per-core tables exist to remove). QEMU runs 2-5x slower.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_nginx import CONTROL, cpu_mask, paired_ratio, parse_wrk, taskset
from guestrun import REPO, add_accel_argument, results_dir, run_guest
from insncount import MAX_LINE_VCPUS, Kallsyms, UserMaps, break_even, by_symbol, read_snapshot
from insncount import build as build_insncount
from kcounters import SNAPSHOT, format_table, median_counters, per_connection
from lock_report import parse_lock_stat
from profile_nginx import diff_table, parse_perf_report, per_thousand

VARIANTS = ("stock", "fastsocket", "fastsocket-ehash")
_UNLOAD = "modprobe -r fastsocket 2>/dev/null || true"
# variant -> (module setup, environment HAProxy runs with under the preload)
SETUP = {
    "stock": (_UNLOAD, ""),
    CONTROL: (_UNLOAD, ""),
    "fastsocket": (f"{_UNLOAD}; modprobe fastsocket", ""),
    "fastsocket-ehash": (f"{_UNLOAD}; modprobe fastsocket ehash_partition=1", ""),
    "fastsocket-listen": (f"{_UNLOAD}; modprobe fastsocket", "FSOCKET_RFD=0 "),
    "fastsocket-nosteer": (f"{_UNLOAD}; modprobe fastsocket rfd_steer=0", ""),
}
# Lock classes a proxied short connection takes on the socket layer, for the summary line.
SOCKET_CLASSES = ("ehash", "bhash", "&tcp_hashinfo", "sk_lock-AF_INET", "slock-AF_INET", "rskq_lock", "lhash2")

NGINX = """daemon off; master_process on; worker_processes {n}; user root;
pid {d}/nginx.pid; error_log {d}/error.log;
events {{ worker_connections 4096; }}
http {{ access_log off; client_body_temp_path {d}/b; proxy_temp_path {d}/p; fastcgi_temp_path {d}/f;
  uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;
  server {{ listen 10.95.0.2:80; root {d}/www; }} }}
"""
HAPROXY = """global
    nbthread {n}
    cpu-map auto:1/1-{n} 0-{last}
    maxconn 20000
{extra}defaults
    mode http
    option httpclose
    http-reuse never
    timeout connect 5s
    timeout client 10s
    timeout server 10s
frontend fe
    bind {fe}:8094
    default_backend be
backend be
    server b1 10.95.0.2:80
"""


def guest_script(
    kernel_dir: Path,
    cpus: int,
    seconds: int,
    rounds: int,
    variants: tuple[str, ...] = VARIANTS,
    client_cpus: int = 0,
    haproxy_global: tuple[str, ...] = (),
    profile: int = 0,
    per_cpu: int = 4,
    marker: Path | None = None,
) -> str:
    """The guest's run: HAProxy on CPUs 0..cpus-1; wrk and nginx on the client_cpus after them (0: shared).

    marker: the insncount marker program, run before and after each wrk run (the plugin's
    snapshot 2i+1 is then run i of run_order)."""
    lib = kernel_dir / "libfsocket.so"
    probe = REPO / "tools/workloads/rfdprobe.py"
    smask = cmask = cpu_mask(0, cpus)
    d = "/tmp/px"
    fe, wrk_ns, on_server, on_client, backends = "127.0.0.1", "pxC", "", "", cpus
    links = ["pxC:vpC", "pxS:vpS"]
    if client_cpus:
        cmask = cpu_mask(cpus, client_cpus)
        fe, wrk_ns, backends = "10.94.0.2", "pxW", client_cpus
        on_server = taskset(0, cpus)
        on_client = taskset(cpus, client_cpus)
        links += ["pxC:vwC", "pxW:vwW"]
    rps = {"vpC": smask, "vwC": smask, "vpS": cmask, "vwW": cmask}
    haproxy_cfg = HAPROXY.format(n=cpus, last=cpus - 1, fe=fe, extra="".join(f"    {g}\n" for g in haproxy_global))
    lines = [
        "ulimit -n 65536",
        "ip netns add pxS && ip netns add pxC",
        "ip link add vpC netns pxC type veth peer name vpS netns pxS",
        "ip -n pxC addr add 10.95.0.1/24 dev vpC && ip -n pxS addr add 10.95.0.2/24 dev vpS",
    ]
    if client_cpus:
        lines += [
            "ip netns add pxW && ip link add vwW netns pxW type veth peer name vwC netns pxC",
            "ip -n pxW addr add 10.94.0.1/24 dev vwW && ip -n pxC addr add 10.94.0.2/24 dev vwC",
        ]
    for link in links:
        ns, dev = link.split(":")
        lines.append(
            f"ip -n {ns} link set {dev} up && ip -n {ns} link set lo up && ip netns exec {ns}"
            f" sh -c 'echo {rps[dev]} > /sys/class/net/{dev}/queues/rx-0/rps_cpus'"
        )
    lines += [
        f"mkdir -p {d}/www && head -c 64 /dev/zero | tr '\\0' x > {d}/www/index.html",
        f"cat > {d}/nginx.conf <<'CONF'\n{NGINX.format(n=backends, d=d)}CONF",
        f"cat > {d}/haproxy.cfg <<'CONF'\n{haproxy_cfg}CONF",
        f"ip netns exec pxS {on_client}nginx -c {d}/nginx.conf -p {d} 2>{d}/nginx.err & NGINX=$!",
        "for i in $(seq 50); do ip netns exec pxC wrk -t1 -c1 -d1s http://10.95.0.2/index.html >/dev/null 2>&1"
        " && break; sleep 0.2; done",
        "LOCKSTAT=0; test -e /proc/lock_stat && LOCKSTAT=1",
        "echo $LOCKSTAT > $OUT/lockstat-available",
    ]
    record = ""
    if marker:
        lines.append("echo 0 > /proc/sys/kernel/kptr_restrict")
    if profile:
        lines += ["echo 0 > /proc/sys/kernel/kptr_restrict", "echo -1 > /proc/sys/kernel/perf_event_paranoid"]
        record = f"perf record -q -a -e cpu-clock -c {profile} -o /tmp/perf.data -- "
    # One stock run outside the measurements first: the boot's first run also pays for the kernel's
    # cold state (neighbour entries, slab pages), which would otherwise all land on stock's round 0.
    lines += [
        _UNLOAD,
        f"ip netns exec pxC {on_server}haproxy -db -f {d}/haproxy.cfg > {d}/haproxy-warmup.log 2>&1 & HAP=$!",
        f"for i in $(seq 50); do ip netns exec {wrk_ns} wrk -t1 -c1 -d1s http://{fe}:8094/index.html >/dev/null"
        " 2>&1 && break; sleep 0.2; done",
        f"ip netns exec {wrk_ns} {on_client}wrk -t{client_cpus or cpus} -c{per_cpu * cpus} -d{seconds}s"
        f" -H 'Connection: close' http://{fe}:8094/index.html > /dev/null",
        "kill $HAP; wait $HAP || true",
    ]
    for r, v in run_order(variants, rounds):
        load, env = SETUP[v]
        preload = f"env LD_PRELOAD={lib} {env}" if v not in ("stock", CONTROL) else ""
        tag = f"{v}-{r}"
        lines += [
            load,
            f"ip netns exec pxC {on_server}{preload}haproxy -db -f {d}/haproxy.cfg > {d}/haproxy-{tag}.log 2>&1"
            " & HAP=$!",
            f"for i in $(seq 50); do ip netns exec {wrk_ns} wrk -t1 -c1 -d1s http://{fe}:8094/index.html >/dev/null"
            " 2>&1 && break; sleep 0.2; done",
            "cat /proc/net/fastsocket > $OUT/" + tag + ".fs-before 2>/dev/null || true",
            'if [ "$LOCKSTAT" = 1 ]; then echo 0 > /proc/lock_stat; echo 1 > /proc/sys/kernel/lock_stat; fi',
            SNAPSHOT.format(path=f"$OUT/{tag}.before"),
            *([str(marker)] if marker else []),
            f"{record}ip netns exec {wrk_ns} {on_client}wrk -t{client_cpus or cpus} -c{per_cpu * cpus} -d{seconds}s"
            f" -H 'Connection: close' http://{fe}:8094/index.html > $OUT/{tag}.wrk",
            *(
                [str(marker), f"cat /proc/kallsyms > $OUT/{tag}.kallsyms", f"cat /proc/$HAP/maps > $OUT/{tag}.maps"]
                if marker
                else []
            ),
            SNAPSHOT.format(path=f"$OUT/{tag}.after"),
            'if [ "$LOCKSTAT" = 1 ]; then echo 0 > /proc/sys/kernel/lock_stat;'
            f" cat /proc/lock_stat > $OUT/{tag}.lock_stat; fi",
            "cat /proc/net/fastsocket > $OUT/" + tag + ".fs-after 2>/dev/null || true",
            "kill $HAP; wait $HAP || true",
            f"ip netns exec pxC {on_server}{preload}python3 {probe} --host 10.95.0.2 --port 80 --per-cpu 20"
            f" > $OUT/{tag}.probe",
        ]
        if profile:
            lines += [
                f"perf report -i /tmp/perf.data --stdio -n --sort comm,dso,sym > $OUT/{tag}.perf 2>/dev/null",
                "rm -f /tmp/perf.data",
            ]
    lines += ["kill $NGINX; wait $NGINX || true", "modprobe -r fastsocket 2>/dev/null || true"]
    return "\n".join(lines)


def run_order(variants: tuple[str, ...], rounds: int) -> list[tuple[int, str]]:
    """(round, variant) in guest order: interleaved, each round starting one variant later."""
    return [(r, variants[(r + k) % len(variants)]) for r in range(rounds) for k in range(len(variants))]


def collect_counts(
    outdir: Path, rounds: int, variants: tuple[str, ...], stem: str = "insns"
) -> dict[str, dict[str, float]]:
    """Events per proxied request by symbol, per variant, from the plugin's snapshots STEM.k: instructions
    (insns) or cache-line transfers (lines). {} if not counted."""
    snaps = sorted(outdir.glob(f"{stem}.*"), key=lambda p: int(p.suffix[1:]))
    if not snaps:
        return {}
    order = run_order(variants, rounds)
    if len(snaps) != 2 * len(order):
        raise SystemExit(f"expected {2 * len(order)} {stem} snapshots in {outdir}, found {len(snaps)}")
    events: dict[str, Counter[str]] = {v: Counter() for v in variants}
    requests = dict.fromkeys(variants, 0)
    for i, (r, v) in enumerate(order):
        tag = f"{v}-{r}"
        ksyms = Kallsyms((outdir / f"{tag}.kallsyms").read_text())
        umaps = UserMaps([(outdir / f"{tag}.maps").read_text()])
        requests[v] += parse_wrk((outdir / f"{tag}.wrk").read_text())["requests"]
        events[v].update(by_symbol(read_snapshot(snaps[2 * i + 1]), ksyms, umaps))
    if not all(requests.values()):
        raise SystemExit("a variant completed no requests: nothing to divide by")
    return {v: {k: n / requests[v] for k, n in events[v].items()} for v in variants}


COUNT_TITLES = {
    "insns": "instructions per proxied request (exact, every vCPU, QEMU plugin)",
    "lines": "cache-line transfers between vCPUs per proxied request (kernel memory, write-invalidate model,"
    " by the code whose access caused them)",
}


def print_counts(counts: dict[str, dict[str, float]], top: int, stem: str = "insns") -> None:
    base = counts["stock"]
    total = sum(base.values())
    print(f"\n{COUNT_TITLES[stem]}")
    for v, other in list(counts.items())[1:]:
        t = sum(other.values())
        ratio = f"{t / total:.4f}x" if total else "stock has none"
        print(f"{v}: {t:.1f} vs stock {total:.1f} ({ratio}, {t - total:+.1f} per request)")
        print(f"{'diff':>9} {'stock':>9} {v[:14]:>14}  symbol")
        for key, b, o, d in diff_table(base, other, top):
            print(f"{d:+9.1f} {b:9.1f} {o:14.1f}  {key}")


def print_break_even(insns: dict[str, dict[str, float]], lines: dict[str, dict[str, float]]) -> dict[str, str]:
    """Per variant: its extra instructions against the transfers it saves (or the other way round)."""
    print("\ninstructions against cache-line transfers, per proxied request, variant minus stock")
    out = {}
    for v in list(insns)[1:]:
        di = sum(insns[v].values()) - sum(insns["stock"].values())
        dl = sum(lines[v].values()) - sum(lines["stock"].values())
        out[v] = "A/A control: its differences are the noise floor" if v == CONTROL else break_even(di, dl)
        print(f"{v}: {di:+.0f} instructions, {dl:+.1f} transfers: {out[v]}")
    return out


def parse_fastsocket(text: str) -> dict[str, int]:
    """/proc/net/fastsocket summed over CPUs ({} when the module was not loaded)."""
    lines = text.splitlines()
    head = next((i for i, line in enumerate(lines) if line.startswith("cpu listen_local")), None)
    if head is None:
        return {}
    names = lines[head].split()[1:]
    total = dict.fromkeys(names, 0)
    for row in lines[head + 1 :]:
        for name, value in zip(names, row.split()[1:], strict=True):
            total[name] += int(value)
    return total


def collect(outdir: Path, rounds: int, variants: tuple[str, ...] = VARIANTS) -> dict:
    """The runs of `variants` (stock first) in outdir, summed up per variant, and the ratios to stock."""
    lockstat = (outdir / "lockstat-available").read_text().strip() == "1"
    data: dict = {"lock_stat": lockstat, "variants": {}}
    for v in variants:
        runs, probes, counters = [], [], {}
        classes: dict[str, int] = {}
        requests = 0
        for r in range(rounds):
            tag = f"{v}-{r}"
            run = parse_wrk((outdir / f"{tag}.wrk").read_text())
            run["events"] = per_connection(
                (outdir / f"{tag}.before").read_text(), (outdir / f"{tag}.after").read_text(), run["requests"]
            )
            runs.append(run)
            requests += run["requests"]
            p = json.loads((outdir / f"{tag}.probe").read_text())
            probes.append({k: p[k] for k in ("connections", "reply_on_cpu_share", "port_encodes_cpu_share")})
            before = parse_fastsocket((outdir / f"{tag}.fs-before").read_text())
            after = parse_fastsocket((outdir / f"{tag}.fs-after").read_text())
            for k in after:
                counters[k] = counters.get(k, 0) + after[k] - before.get(k, 0)
            if lockstat:
                for name, c in parse_lock_stat((outdir / f"{tag}.lock_stat").read_text()).items():
                    classes[name] = classes.get(name, 0) + c.acq_bounces
        cps = sorted(run["cps"] for run in runs)
        conns = sum(p["connections"] for p in probes)
        data["variants"][v] = {
            "cps": statistics.median(cps),
            "min": cps[0],
            "max": cps[-1],
            "runs": runs,
            "errors": sum(run["errors"] + run["non2xx"] for run in runs),
            "events": median_counters([run["events"] for run in runs]),
            "reply_on_cpu_share": round(sum(p["reply_on_cpu_share"] * p["connections"] for p in probes) / conns, 3),
            "port_encodes_cpu_share": round(
                sum(p["port_encodes_cpu_share"] * p["connections"] for p in probes) / conns, 3
            ),
            "fastsocket_per_request": {k: round(n / requests, 2) for k, n in counters.items()},
            "acq_bounces_per_request": {k: round(n / requests, 3) for k, n in classes.items()},
        }
    base = data["variants"]["stock"]["cps"]
    for v in variants[1:]:
        data[f"cps_ratio_{v}"] = round(data["variants"][v]["cps"] / base, 3) if base else None
        data[f"cps_paired_ratio_{v}"] = paired_ratio(data["variants"][v]["runs"], data["variants"]["stock"]["runs"])
    return data


def collect_profile(outdir: Path, rounds: int, variants: tuple[str, ...], by: str) -> dict[str, dict[str, float]]:
    """perf samples per 1,000 proxied requests, by `by` (see profile_nginx.KEYS), per variant ({} if not profiled)."""
    if not (outdir / f"{variants[0]}-0.perf").exists():
        return {}
    out: dict[str, dict[str, float]] = {}
    for v in variants:
        rows: Counter[tuple[str, str, str]] = Counter()
        requests = 0
        for r in range(rounds):
            requests += parse_wrk((outdir / f"{v}-{r}.wrk").read_text())["requests"]
            rows.update(parse_perf_report((outdir / f"{v}-{r}.perf").read_text()))
        out[v] = {" ".join(k): n for k, n in per_thousand(rows, requests, by).items()}
    return out


def print_profile(profile: dict[str, dict[str, float]], period: int, by: str, top: int) -> None:
    base = profile["stock"]
    total = sum(base.values())
    print(f"\nperf samples per 1,000 proxied requests by {by} (1 sample = {period} instructions)")
    for v, other in list(profile.items())[1:]:
        t = sum(other.values())
        extra = (t - total) * period / 1000
        print(f"{v}: {t:.0f} vs stock {total:.0f} ({t / total:.4f}x, {extra:+.0f} instructions per request)")
        print(f"{'diff':>9} {'stock':>9} {v[:14]:>14}  {by}")
        for key, b, o, d in diff_table(base, other, top):
            print(f"{d:+9.1f} {b:9.1f} {o:14.1f}  {key}")


def top_classes(data: dict, n: int = 12) -> list[str]:
    per = [d["acq_bounces_per_request"] for d in data["variants"].values()]
    names = set().union(*per)
    return sorted(names, key=lambda k: -max(p.get(k, 0) for p in per))[:n]


def print_report(data: dict, rounds: int) -> None:
    vs = data["variants"]
    names = tuple(vs)  # the variants of this run, stock first
    cols = "".join(f"{v:>18}" for v in names)
    where = f"wrk and nginx on {data['client_cpus']} vCPUs of their own" if data.get("client_cpus") else "one box"
    where += f", {data.get('connections_per_cpu', 4)} client connections per HAProxy vCPU"
    if data.get("haproxy_global"):
        where += "; HAProxy global: " + ", ".join(data["haproxy_global"])
    print(
        f"HAProxy -> nginx over veth+RPS ({where}), one new backend connection per request; {rounds} interleaved rounds"
    )
    print(f"{'':34}{cols}")
    print(f"{'proxied connections/s (median)':34}" + "".join(f"{vs[v]['cps']:>18.1f}" for v in names))
    print(f"{'  [min-max]':34}" + "".join(f"{vs[v]['min']:>11.0f}-{vs[v]['max']:<6.0f}" for v in names))
    print(f"{'  ratio to stock':34}{1:>18.2f}" + "".join(f"{data[f'cps_ratio_{v}'] or 0:>18.2f}" for v in names[1:]))
    paired = [data[f"cps_paired_ratio_{v}"] for v in names[1:]]
    print(
        f"{'  per-round ratio, median':34}{1:>18.3f}"
        + "".join(f"{p['median'] or 0:>18.3f}" for p in paired)
        + "\n"
        + f"{'  per-round ratio [min-max]':34}{'':>18}"
        + "".join(f"{p['min'] or 0:>11.2f}-{p['max'] or 0:<6.2f}" for p in paired)
    )
    for key, label in (
        ("reply_on_cpu_share", "replies on the connecting CPU"),
        ("port_encodes_cpu_share", "ports encoding their CPU"),
    ):
        print(f"{label:34}" + "".join(f"{vs[v][key]:>18.3f}" for v in names))
    print(f"{'wrk errors':34}" + "".join(f"{vs[v]['errors']:>18}" for v in names))
    print("kernel events per proxied request (median of rounds):")
    print(format_table({v: vs[v]["events"] for v in names}, indent=2))
    for v in names[1:]:
        print(f"{v} counters per proxied request:", vs[v]["fastsocket_per_request"])
    if data["lock_stat"]:
        print("\nacq-bounces per proxied request (lock_stat)")
        for name in top_classes(data):
            print(
                f"  {name[:44]:44}" + "".join(f"{vs[v]['acq_bounces_per_request'].get(name, 0):>18.3f}" for v in names)
            )
        for v in names:
            total = sum(n for k, n in vs[v]["acq_bounces_per_request"].items() if any(c in k for c in SOCKET_CLASSES))
            vs[v]["socket_acq_bounces_per_request"] = round(total, 3)
        print(
            "socket-layer classes (ehash, bhash, socket locks, listener) per request: "
            + ", ".join(f"{v} {vs[v]['socket_acq_bounces_per_request']}" for v in names)
        )


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vs = data["variants"]
    names = tuple(vs)  # the variants of this run, stock first
    lines = data.get("line_transfers_per_request")
    panels = 2 + bool(data["lock_stat"]) + bool(lines)
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4.5))
    colors = ["tab:gray", "tab:blue", "tab:green", "tab:orange", "tab:purple"][: len(names)]
    axes[0].bar(names, [vs[v]["cps"] for v in names], color=colors)
    axes[0].set_ylabel("proxied connections/s (median)")
    axes[1].bar(names, [vs[v]["reply_on_cpu_share"] for v in names], color=colors)
    axes[1].set_ylim(0, 1.05)
    axes[1].set_ylabel("share of replies processed on the connecting CPU")
    if data["lock_stat"]:
        classes = top_classes(data, 8)
        height = 0.8 / len(names)
        for k, v in enumerate(names):
            axes[2].barh(
                [i + k * height for i in range(len(classes))],
                [vs[v]["acq_bounces_per_request"].get(n, 0) for n in classes],
                height=height,
                label=v,
            )
        axes[2].set_yticks([i + 0.4 - height / 2 for i in range(len(classes))], [n[:30] for n in classes], fontsize=7)
        axes[2].invert_yaxis()
        axes[2].set_xlabel("acq-bounces per proxied request")
        axes[2].legend()
    if lines:
        axes[-1].bar(names, [sum(lines[v].values()) for v in names], color=colors)
        axes[-1].set_ylabel("cache-line transfers between vCPUs per request (model)")
    fig.suptitle("HAProxy proxy, short backend connections: stock vs fastsocket RFD")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel-dir", type=Path, default=REPO / "out/x86_64/vm")
    ap.add_argument("--cpus", type=int, default=2, help="guest vCPUs (default 2)")
    ap.add_argument("--seconds", type=int, default=5, help="per run (default 5)")
    ap.add_argument("--rounds", type=int, default=3, help="runs per variant, interleaved (default 3)")
    ap.add_argument("--from-dir", type=Path, help="re-report an earlier run's directory without booting")
    ap.add_argument(
        "--variants",
        nargs="+",
        choices=tuple(SETUP),
        default=list(VARIANTS),
        help=f"variants to run, stock always first (default: {' '.join(VARIANTS)})",
    )
    ap.add_argument(
        "--client-cpus",
        type=int,
        default=0,
        metavar="K",
        help="K more vCPUs for wrk and the nginx backend, HAProxy alone on the --cpus ones (default 0: shared)",
    )
    ap.add_argument(
        "--haproxy-global",
        action="append",
        default=[],
        metavar="LINE",
        help="one more line for HAProxy's global section, in every variant (repeatable),"
        " e.g. 'tune.listener.multi-queue off'",
    )
    ap.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="perf record -a every N instructions during the wrk runs (needs --accel icount), and print"
        " where each variant's instructions per request differ from stock's",
    )
    ap.add_argument(
        "--connections-per-cpu",
        type=int,
        default=4,
        metavar="K",
        help="wrk keeps K connections open per HAProxy vCPU (default 4; more to saturate the proxy)",
    )
    ap.add_argument(
        "--count",
        action="store_true",
        help="(needs --accel icount) count every instruction of each wrk run with a QEMU plugin and print"
        " where each variant's instructions per request differ from stock's, by kernel symbol and HAProxy function",
    )
    ap.add_argument(
        "--lines",
        action="store_true",
        help="(with --count) also count the cache-line transfers between vCPUs that the kernel's loads and"
        " stores cause, in a write-invalidate model of per-vCPU caches, by symbol (QEMU runs 2-5x slower)",
    )
    ap.add_argument("--top", type=int, default=25, help="rows per profile table (default 25)")
    add_accel_argument(ap)
    args = ap.parse_args()
    if args.profile and (args.profile < 1000 or (args.accel != "icount" and not args.from_dir)):
        ap.error("--profile needs --accel icount (a sample must stand for instructions) and N of at least 1000")
    if args.count and args.accel != "icount" and not args.from_dir:
        ap.error("--count needs --accel icount (the plugin counts instructions of the icount clock)")
    if args.lines and not args.count:
        ap.error("--lines works with --count (the same plugin takes both): add --count")
    if args.lines and args.cpus + args.client_cpus > MAX_LINE_VCPUS:
        ap.error(f"--lines models at most {MAX_LINE_VCPUS} vCPUs: --cpus plus --client-cpus is more")
    if args.count and args.profile:
        ap.error("--count and --profile are two ways of the same thing: take one")
    if args.top < 1:
        ap.error("--top must be at least 1")
    if not 1 <= args.connections_per_cpu <= 1000:
        ap.error("--connections-per-cpu must be between 1 and 1000")
    if any(not g.strip() or "\n" in g for g in args.haproxy_global):
        ap.error("--haproxy-global takes one non-empty line")
    if args.seconds < 1 or args.rounds < 1 or args.cpus < 2:
        ap.error("--seconds and --rounds must be at least 1, --cpus at least 2")
    if args.client_cpus < 0:
        ap.error("--client-cpus must be 0 or more")
    variants = ("stock", *dict.fromkeys(v for v in args.variants if v != "stock"))
    if args.from_dir:
        outdir = args.from_dir
    else:
        if not (args.kernel_dir / "manifest.json").exists():
            ap.error(f"no kernel in {args.kernel_dir}: run `python3 build.py` first")
        outdir = results_dir("proxy")
        tools = build_insncount(REPO / "out" / "tools" / "insncount") if args.count else None
        script = guest_script(
            args.kernel_dir,
            args.cpus,
            args.seconds,
            args.rounds,
            variants,
            args.client_cpus,
            tuple(args.haproxy_global),
            args.profile,
            args.connections_per_cpu,
            tools.marker if tools else None,
        )
        run_guest(
            args.kernel_dir,
            script,
            outdir,
            cpus=args.cpus + args.client_cpus,
            accel=args.accel,
            qemu_opts=tools.qemu_opts(outdir / "insns", outdir / "lines" if args.lines else None) if tools else "",
            timeout=5400 * (3 if args.lines else 1),
        )
        (outdir / "client-cpus").write_text(f"{args.client_cpus}\n")
        (outdir / "haproxy-global").write_text("".join(f"{g}\n" for g in args.haproxy_global))
        (outdir / "profile-period").write_text(f"{args.profile}\n")
        (outdir / "connections-per-cpu").write_text(f"{args.connections_per_cpu}\n")
    data = collect(outdir, args.rounds, variants)
    clients = outdir / "client-cpus"
    data["client_cpus"] = int(clients.read_text()) if clients.exists() else 0
    extra = outdir / "haproxy-global"
    data["haproxy_global"] = extra.read_text().splitlines() if extra.exists() else []
    per_cpu = outdir / "connections-per-cpu"
    data["connections_per_cpu"] = int(per_cpu.read_text()) if per_cpu.exists() else 4
    print_report(data, args.rounds)
    period_file = outdir / "profile-period"
    period = int(period_file.read_text()) if period_file.exists() else 0
    if period:
        for by in ("comm", "sym"):
            data[f"profile_by_{by}"] = collect_profile(outdir, args.rounds, variants, by)
            print_profile(data[f"profile_by_{by}"], period, by, args.top)
    for stem, key in (("insns", "instructions_per_request"), ("lines", "line_transfers_per_request")):
        counts = collect_counts(outdir, args.rounds, variants, stem)
        if counts:
            data[key] = counts
            print_counts(counts, args.top, stem)
    if "line_transfers_per_request" in data:
        data["break_even"] = print_break_even(data["instructions_per_request"], data["line_transfers_per_request"])
    (outdir / "results.json").write_text(json.dumps({"accel": args.accel, **data}, indent=1))
    plot(data, outdir / "proxy.png")
    print(f"\ndata and plot: {outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

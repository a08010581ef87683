#!/usr/bin/env python3
"""nginx short-connection benchmark: stock vs reuseport vs libfsocket vs fastsocket, one guest boot per vCPU count.

    python3 tools/bench_nginx.py [--cpus 1 2] [--seconds 4] [--net veth] [--accel icount]
    python3 tools/bench_nginx.py --net veth --client-cpus 2 --accel icount  # wrk on CPUs of its own

nginx (Debian's) serves a small static file with one worker per vCPU,
pinned; wrk in the same guest opens one connection per request
(Connection: close). Variants, all in the same boot:
  stock       shared listener, no preload
  reuseport   nginx `listen ... reuseport` (one listener per worker)
  libfsocket  LD_PRELOAD=libfsocket.so without fastsocket.ko: portable mode
              (per-worker SO_REUSEPORT listener with SO_INCOMING_CPU)
  fastsocket  LD_PRELOAD=libfsocket.so with fastsocket.ko (local listeners)
and, with --variants, stock-again: stock once more in every round, the A/A
control whose ratio to stock is the noise floor of the other ratios.
Prints connections/s and the ratio to stock, and saves JSON and a plot
under out/reports/. Under plain TCG (no KVM) the rates drift with the host
by +-25% from run to run. --accel icount makes the guest clock count
instructions: connections per guest second then measure the instructions a
connection costs (repeatable to about 0.3%), in a machine without caches,
so the cache-line and lock bounces fastsocket removes cost nothing there:
read the lock report for those. --net veth puts wrk in another namespace
behind a veth pair with RPS, so SYNs land on CPUs as a NIC's RSS would put
them; on loopback a SYN is processed on the client's own CPU.
--client-cpus K (with --net veth) boots K more vCPUs for wrk and its
namespace's softirqs and keeps nginx and its RPS on the first --cpus ones,
as when clients are other machines: wrk then never shares a CPU with a
worker, so where a variant wakes the worker (on the CPU of the SYN, or on
any idle one) no longer decides whether it waits behind wrk.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from guestrun import REPO, add_accel_argument, results_dir, run_guest
from kcounters import SNAPSHOT, format_table, median_counters, per_connection

VARIANTS = ("stock", "reuseport", "libfsocket", "fastsocket")
CONTROL = "stock-again"  # stock run twice per round: the ratio two identical setups get
CONF = """daemon off; master_process on; worker_processes {n}; worker_cpu_affinity {affinity}; user root;
pid {d}/nginx.pid; error_log {d}/error.log;
events {{ worker_connections 4096; accept_mutex off; }}
http {{ access_log off; client_body_temp_path {d}/b; proxy_temp_path {d}/p; fastcgi_temp_path {d}/f;
  uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;
  server {{ listen {addr}:8088{reuseport}; root {d}/www; }} }}
"""
# --net veth: wrk in namespace nbC, nginx in the initial one, across a veth
# pair with RPS spreading flows over every CPU, as a NIC's RSS would.
VETH_SETUP = (
    "ip netns add nbC",
    "ip link add vnS type veth peer name vnC netns nbC",
    "ip addr add 10.96.0.2/24 dev vnS && ip link set vnS up",
    "ip -n nbC addr add 10.96.0.1/24 dev vnC && ip -n nbC link set vnC up && ip -n nbC link set lo up",
    "echo {smask} > /sys/class/net/vnS/queues/rx-0/rps_cpus",
    "ip netns exec nbC sh -c 'echo {cmask} > /sys/class/net/vnC/queues/rx-0/rps_cpus'",
)


def worker_affinity(cpus: int) -> str:
    """nginx worker_cpu_affinity masks: worker i on CPU i (CPU 0 is the rightmost bit)."""
    return " ".join(format(1 << i, f"0{cpus}b") for i in range(cpus))


def cpu_mask(first: int, count: int) -> str:
    """Hex CPU mask (as rps_cpus takes it) of CPUs first .. first+count-1."""
    return f"{((1 << count) - 1) << first:x}"


def taskset(first: int, count: int) -> str:
    """A command prefix confining it to CPUs first .. first+count-1."""
    return f"taskset -c {first}-{first + count - 1} "


def start_nginx(
    variant: str, lib: Path, cpus: int, addr: str = "127.0.0.1", client: str = "", server: str = ""
) -> list[str]:
    """Guest script lines: nginx configured and started as `variant` wants, and answering.

    `client` prefixes the wrk that waits for it, `server` the nginx command.
    """
    # One directory for every variant (each nginx is stopped before the next starts):
    # paths of different lengths would be one more difference between them.
    d = "/tmp/bench-nginx"
    reuseport = " reuseport" if variant == "reuseport" else ""
    conf = CONF.format(n=cpus, d=d, addr=addr, reuseport=reuseport, affinity=worker_affinity(cpus))
    preload = f"env LD_PRELOAD={lib} " if variant in ("libfsocket", "fastsocket") else ""
    return [
        f"mkdir -p {d}/www && head -c 64 /dev/zero | tr '\\0' x > {d}/www/index.html",
        f"cat > {d}/nginx.conf <<'CONF'\n{conf}CONF",
        "modprobe fastsocket" if variant == "fastsocket" else "modprobe -r fastsocket 2>/dev/null || true",
        f"{server}{preload}nginx -c {d}/nginx.conf -p {d} 2>{d}/stderr & NGINX=$!",
        f"for i in $(seq 50); do {client}wrk -t1 -c1 -d1s http://{addr}:8088/index.html >/dev/null 2>&1"
        " && break; sleep 0.2; done",
    ]


def client_network(cpus: int, net: str, client_cpus: int) -> tuple[list[str], str, str, str, int]:
    """Where wrk runs: (setup lines, nginx's address, wrk's command prefix, nginx's prefix, wrk threads).

    loopback: wrk beside nginx on its vCPUs. veth: wrk in another namespace behind a veth pair with
    RPS, on nginx's vCPUs or, with client_cpus, on that many vCPUs after them."""
    if client_cpus and net != "veth":
        raise ValueError("client CPUs of their own need --net veth (on loopback a SYN is processed on wrk's CPU)")
    if net != "veth":
        return [], "127.0.0.1", "", "", cpus
    client, server, threads = "ip netns exec nbC ", "", cpus
    smask = cmask = cpu_mask(0, cpus)
    if client_cpus:
        cmask = cpu_mask(cpus, client_cpus)
        client += taskset(cpus, client_cpus)
        server = taskset(0, cpus)
        threads = client_cpus
    return [step.format(smask=smask, cmask=cmask) for step in VETH_SETUP], "10.96.0.2", client, server, threads


def warm_up(
    lib: Path, cpus: int, addr: str, client: str, server: str, threads: int, conns: int, seconds: int
) -> list[str]:
    """Guest script lines: one stock run that nothing measures, before the measured ones. The boot's
    first run also pays for the kernel's cold state (neighbour entries, slab pages), which would
    otherwise all land on stock's first round."""
    return [
        *start_nginx("stock", lib, cpus, addr, client, server),
        f"{client}wrk -t{threads} -c{conns} -d{seconds}s -H 'Connection: close' http://{addr}:8088/index.html"
        " > /dev/null",
        "kill $NGINX; wait $NGINX || true",
    ]


def guest_script(
    kernel_dir: Path,
    cpus: int,
    seconds: int,
    rounds: int,
    net: str = "loopback",
    client_cpus: int = 0,
    variants: tuple[str, ...] = VARIANTS,
    per_cpu: int = 4,
) -> str:
    """The guest's run: nginx on CPUs 0..cpus-1; wrk (per_cpu connections per nginx CPU) on the client_cpus after
    them (0: on the same ones)."""
    lib = kernel_dir / "libfsocket.so"
    net_lines, addr, client, server, threads = client_network(cpus, net, client_cpus)
    lines = ["ulimit -n 65536", *net_lines, *warm_up(lib, cpus, addr, client, server, threads, per_cpu * cpus, seconds)]
    # Interleaved, and each round starts one variant later: drift and position hit all alike.
    order = [(r, variants[(r + k) % len(variants)]) for r in range(rounds) for k in range(len(variants))]
    for r, v in order:
        lines += [
            *start_nginx(v, lib, cpus, addr, client, server),
            SNAPSHOT.format(path=f"$OUT/{v}-{cpus}-{r}.before"),
            f"{client}wrk -t{threads} -c{per_cpu * cpus} -d{seconds}s -H 'Connection: close' http://{addr}:8088/index.html"
            f" > $OUT/{v}-{cpus}-{r}.wrk",
            SNAPSHOT.format(path=f"$OUT/{v}-{cpus}-{r}.after"),
            "kill $NGINX; wait $NGINX || true",
            f"cat /proc/net/fastsocket > $OUT/{v}-{cpus}-{r}.fastsocket 2>/dev/null || true",
        ]
    return "\n".join(lines)


def paired_ratio(runs: list[dict], base: list[dict]) -> dict:
    """Median [min, max] over rounds of cps(run r) / cps(base run r).

    Each round runs every variant back to back, so the per-round ratio cancels
    the drift between rounds (guest warm-up, host load) that dominates the
    spread of the plain medians under TCG.
    """
    ratios = sorted(r["cps"] / b["cps"] for r, b in zip(runs, base, strict=True) if b["cps"] > 0)
    if not ratios:
        return {"median": None, "min": None, "max": None}
    return {"median": round(statistics.median(ratios), 3), "min": round(ratios[0], 3), "max": round(ratios[-1], 3)}


def parse_wrk(text: str) -> dict:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    reqs = re.search(r"(\d+) requests in", text)
    if not rps or not reqs:
        raise SystemExit(f"cannot read wrk output:\n{text}")
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {
        "cps": float(rps.group(1)),
        "requests": int(reqs.group(1)),
        "errors": sum(map(int, errors.groups())) if errors else 0,
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
    }


def plot(results: dict, path: Path, where: str = "", variants: tuple[str, ...] = VARIANTS) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cpus = sorted(results, key=int)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / len(variants)
    for i, v in enumerate(variants):
        ax.bar(
            [c + (i - (len(variants) - 1) / 2) * width for c in range(len(cpus))],
            [results[c][v]["cps"] for c in cpus],
            width=width,
            label=v,
        )
    ax.set_xticks(range(len(cpus)), [f"{c} server vCPU" for c in cpus])
    ax.set_ylabel("connections/s (wrk, Connection: close)")
    ax.set_title(f"nginx short connections, one guest boot per vCPU count{where}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel-dir", type=Path, default=REPO / "out/x86_64/vm")
    ap.add_argument("--cpus", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--seconds", type=int, default=4, help="per run (default 4)")
    ap.add_argument("--rounds", type=int, default=3, help="runs per variant, interleaved (default 3)")
    ap.add_argument(
        "--net",
        choices=("loopback", "veth"),
        default="loopback",
        help="veth: wrk in another namespace, flows spread by RPS as by a NIC (default loopback)",
    )
    ap.add_argument(
        "--client-cpus",
        type=int,
        default=0,
        metavar="K",
        help="with --net veth: K more vCPUs for wrk alone, nginx on the --cpus ones (default 0: shared)",
    )
    ap.add_argument(
        "--variants",
        nargs="+",
        choices=(*VARIANTS, CONTROL),
        default=list(VARIANTS),
        help=f"variants to run, stock always first (default: {' '.join(VARIANTS)}; {CONTROL}: the A/A control)",
    )
    ap.add_argument(
        "--connections-per-cpu",
        type=int,
        default=4,
        metavar="K",
        help="wrk keeps K connections open per nginx vCPU (default 4; more to saturate the server)",
    )
    add_accel_argument(ap)
    args = ap.parse_args()
    if not 1 <= args.connections_per_cpu <= 1000:
        ap.error("--connections-per-cpu must be between 1 and 1000")
    variants = ("stock", *dict.fromkeys(v for v in args.variants if v != "stock"))
    if args.seconds < 1 or args.rounds < 1 or any(c < 1 for c in args.cpus):
        ap.error("--seconds, --rounds and --cpus must be at least 1")
    if args.client_cpus < 0:
        ap.error("--client-cpus must be 0 or more")
    if args.client_cpus and args.net != "veth":
        ap.error("--client-cpus needs --net veth: on loopback a SYN is processed on wrk's own CPU")
    if not (args.kernel_dir / "manifest.json").exists():
        ap.error(f"no kernel in {args.kernel_dir}: run `python3 build.py` first")
    outdir = results_dir("nginx")
    results: dict[str, dict] = {}
    for cpus in args.cpus:
        run_guest(
            args.kernel_dir,
            guest_script(
                args.kernel_dir,
                cpus,
                args.seconds,
                args.rounds,
                args.net,
                args.client_cpus,
                variants,
                args.connections_per_cpu,
            ),
            outdir,
            cpus=cpus + args.client_cpus,
            tag=f"{cpus}cpu",
            accel=args.accel,
        )
        results[str(cpus)] = {}
        for v in variants:
            runs = []
            for r in range(args.rounds):
                stem = outdir / f"{v}-{cpus}-{r}"
                run = parse_wrk(stem.with_suffix(".wrk").read_text())
                run["events"] = per_connection(
                    stem.with_suffix(".before").read_text(), stem.with_suffix(".after").read_text(), run["requests"]
                )
                runs.append(run)
            cps = sorted(run["cps"] for run in runs)
            results[str(cpus)][v] = {
                "cps": statistics.median(cps),
                "min": cps[0],
                "max": cps[-1],
                "runs": runs,
                "errors": sum(run["errors"] for run in runs),
                "non2xx": sum(run["non2xx"] for run in runs),
                "events": median_counters([run["events"] for run in runs]),
            }
        for v in variants:
            results[str(cpus)][v]["paired_ratio"] = paired_ratio(
                results[str(cpus)][v]["runs"], results[str(cpus)]["stock"]["runs"]
            )
    meta = {
        "accel": args.accel,
        "net": args.net,
        "client_cpus": args.client_cpus,
        "connections_per_cpu": args.connections_per_cpu,
        "variants": list(variants),
    }
    (outdir / "results.json").write_text(json.dumps({**meta, **results}, indent=1))
    clock = "10^9 instructions per guest second (icount)" if args.accel == "icount" else "the host's time"
    where = f"wrk on {args.client_cpus} vCPUs of its own" if args.client_cpus else "wrk on the server's vCPUs"
    where += f", {args.connections_per_cpu} connections per nginx vCPU"
    print(f"nginx over {args.net}, {where}; guest clock: {clock}")
    print(f"connections/s, median of {args.rounds} interleaved runs [min-max], ratio of medians to stock")
    print(f"{'vCPUs':6}" + "".join(f"{v:>30}" for v in variants))
    for cpus, row in results.items():
        base = row["stock"]["cps"]
        cells = "".join(
            f"{row[v]['cps']:>9.1f} [{row[v]['min']:.0f}-{row[v]['max']:.0f}] ({row[v]['cps'] / base:4.2f}x)"
            for v in variants
        )
        print(f"{cpus:6}{cells}")
        pr = "".join(
            f"{row[v]['paired_ratio']['median']:>15.3f}x [{row[v]['paired_ratio']['min']:.2f}-"
            f"{row[v]['paired_ratio']['max']:.2f}]"
            for v in variants
        )
        print(f"{'':6}{pr}   <- per-round ratio to stock, median [min-max]")
        print(format_table({v: row[v]["events"] for v in variants}, indent=6))
        bad = {v: r for v, r in row.items() if r["errors"] or r["non2xx"]}
        if bad:
            print(f"  errors at {cpus} vCPUs: {bad}")
    plot(results, outdir / "nginx-cps.png", f"\n{where}", variants)
    print(f"\ndata and plot: {outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

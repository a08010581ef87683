#!/usr/bin/env python3
"""Slick benchmark: in-kernel echo server and Thrift forwarder vs their user-process references, one guest boot.

    python3 tools/bench_slick.py [--quick] [--impls kernel user] [--seconds 3] [--rounds 3]

Reproduces the Slick paper's Table 2 (echo: throughput with C streaming
connections, and ping-pong latency over one connection, at buffer sizes 32 ..
16384 bytes) and Table 3 (forwarder: messages/s and payload bytes/s measured
at sink backends, at payload sizes 128 .. 4096 bytes). The load comes from
tools/slick/slick_load (C, epoll), built on the host into build/slick-tools/.

In one boot of the out/ kernel, both implementations run side by side
(kernel: slick_echo.ko port 7007, slick_forwarder.ko ports 9090/9091; user:
slick_echo_user and slick_forwarder_user on other ports) and the runs are
interleaved: each round visits every size, and the implementation that goes
first alternates. Reports medians over rounds [min-max] and the ratio
kernel/user; saves JSON, CSV and a plot under out/reports/slick-<timestamp>/.
Every run must be clean (no verify errors, nothing lost, nothing reordered),
or the script says which and exits 1.

Under TCG (no KVM) there are no caches and no real parallelism to model:
the ratios are weak evidence of what hardware would show.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import shlex
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from guestrun import REPO, results_dir, run_guest

log = logging.getLogger("bench_slick")

TOOLS_SRC = REPO / "tools" / "slick"
TOOLS_OUT = REPO / "build" / "slick-tools"
IMPLS = ("kernel", "user")
ECHO_SIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
FWD_SIZES = (128, 256, 512, 1024, 2048, 4096)
QUICK_ECHO_SIZES = (32, 1024, 16384)
QUICK_FWD_SIZES = (128, 4096)
MODULES = ("slick_echo", "slick_forwarder")
# impl -> (echo port, forwarder port, controller port)
PORTS = {"kernel": (7007, 9090, 9091), "user": (7107, 9190, 9191)}
MAX_MSG = 1048576


@dataclass(frozen=True)
class Run:
    """One slick_load invocation."""

    bench: str  # "echo" or "forward"
    mode: str  # echo: "tput" (streaming) or "lat" (ping-pong); forward: "tput"
    impl: str
    size: int
    round: int

    @property
    def filename(self) -> str:
        return f"{self.bench}-{self.mode}-{self.impl}-{self.size}-{self.round}.json"


@dataclass(frozen=True)
class Options:
    seconds: float
    warmup: float
    rounds: int
    echo_sizes: tuple[int, ...]
    fwd_sizes: tuple[int, ...]
    impls: tuple[str, ...]
    echo_conns: int
    fwd_conns: int
    sinks: int
    framed: bool
    nodelay: bool = False


@dataclass
class Summary:
    median: float
    lo: float
    hi: float
    n: int


# metric name -> (bench, mode, JSON path in slick_load's output)
METRICS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "echo_bytes_per_s": ("echo", "tput", ("bytes_per_s",)),
    "echo_lat_p50_us": ("echo", "lat", ("lat_us", "p50")),
    "echo_lat_p99_us": ("echo", "lat", ("lat_us", "p99")),
    "fwd_msgs_per_s": ("forward", "tput", ("msgs_per_s",)),
    "fwd_payload_bytes_per_s": ("forward", "tput", ("payload_bytes_per_s",)),
}
LOWER_IS_BETTER = {"echo_lat_p50_us", "echo_lat_p99_us"}


@dataclass
class Results:
    options: dict
    # metric -> size -> impl -> Summary
    metrics: dict[str, dict[int, dict[str, Summary]]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def plan(opts: Options) -> list[Run]:
    """All runs in order: round by round, size by size, the first implementation alternating."""
    runs: list[Run] = []
    for r in range(opts.rounds):
        for i, size in enumerate(opts.echo_sizes):
            for impl in _rotate(opts.impls, r + i):
                runs += [Run("echo", "tput", impl, size, r), Run("echo", "lat", impl, size, r)]
        for i, size in enumerate(opts.fwd_sizes):
            for impl in _rotate(opts.impls, r + i):
                runs.append(Run("forward", "tput", impl, size, r))
    return runs


def _rotate(items: tuple[str, ...], k: int) -> tuple[str, ...]:
    k %= len(items)
    return items[k:] + items[:k]


def load_argv(run: Run, opts: Options, tools: Path = TOOLS_OUT) -> list[str]:
    echo_port, fwd_port, ctl_port = PORTS[run.impl]
    common = ["--seconds", f"{opts.seconds:g}", "--warmup", f"{opts.warmup:g}", "--size", str(run.size)]
    if run.bench == "echo":
        conns = "1" if run.mode == "lat" else str(opts.echo_conns)
        extra = ["--pingpong"] if run.mode == "lat" else []
        return [str(tools / "slick_load"), "echo", "--port", str(echo_port), "--conns", conns, *common, *extra]
    return [
        str(tools / "slick_load"),
        "forward",
        *("--port", str(fwd_port), "--ctl-port", str(ctl_port)),
        *("--conns", str(opts.fwd_conns), "--sinks", str(opts.sinks), "--framed", str(int(opts.framed))),
        *common,
    ]


def guest_script(opts: Options, python: str = sys.executable, tools: Path = TOOLS_OUT) -> str:
    """The shell script the guest runs: start every server, run the plan, save stats, stop them."""
    framed = int(opts.framed)
    nodelay = int(opts.nodelay)
    wait = (
        f"waitport() {{ {shlex.quote(python)} -c 'import socket,sys,time\n"
        "for _ in range(300):\n"
        '    try: socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close(); sys.exit(0)\n'
        "    except OSError: time.sleep(0.1)\n"
        'sys.exit("nothing listens on port " + sys.argv[1])\' "$1"; }'
    )
    lines = ["ulimit -n 65536 2>/dev/null || true", wait]
    if "kernel" in opts.impls:
        e, f, c = PORTS["kernel"]
        lines += [
            f"modprobe slick_echo port={e} backlog=128 nodelay={nodelay}",
            f"modprobe slick_forwarder port={f} ctl_port={c} framed={framed} max_msg={MAX_MSG}",
            f"waitport {e}; waitport {f}; waitport {c}",
        ]
    if "user" in opts.impls:
        e, f, c = PORTS["user"]
        t = shlex.quote(str(tools))
        lines += [
            f"{t}/slick_echo_user --port {e} --backlog 128{' --nodelay' if nodelay else ''}"
            " --stats /tmp/echo-user.stats > $OUT/echo-user.log 2>&1 &",
            "ECHO_PID=$!",
            f"{t}/slick_forwarder_user --port {f} --ctl-port {c} --framed {framed} --max-msg {MAX_MSG}"
            " --stats /tmp/fwd-user.stats > $OUT/fwd-user.log 2>&1 &",
            "FWD_PID=$!",
            f"waitport {e}; waitport {f}; waitport {c}",
        ]
    for run in plan(opts):
        # slick_load prints its JSON line even when the run fails; the host judges it
        argv = " ".join(shlex.quote(a) for a in load_argv(run, opts, tools))
        lines.append(f"{argv} > $OUT/{run.filename} 2> $OUT/{run.filename}.err || true")
    if "kernel" in opts.impls:
        lines += [
            "cat /proc/net/slick_echo > $OUT/stats-echo-kernel.txt",
            "cat /proc/net/slick_forwarder > $OUT/stats-forward-kernel.txt",
            "modprobe -r slick_echo slick_forwarder",
        ]
    if "user" in opts.impls:
        lines += [
            "kill $ECHO_PID $FWD_PID; wait $ECHO_PID $FWD_PID || true",
            "cp /tmp/echo-user.stats $OUT/stats-echo-user.txt; cp /tmp/fwd-user.stats $OUT/stats-forward-user.txt",
        ]
    return "\n".join(lines)


def parse_run(text: str, run: Run) -> dict:
    """slick_load's JSON line for run; raises ValueError when it is missing or not a clean run."""
    lines = [line for line in text.splitlines() if line.strip().startswith("{")]
    if not lines:
        raise ValueError(f"{run.filename}: no JSON line from slick_load")
    data = json.loads(lines[-1])
    if data.get("mode") != run.bench or data.get("size") != run.size:
        raise ValueError(f"{run.filename}: output is for {data.get('mode')} size {data.get('size')}")
    if not data.get("ok"):
        keys = ("verify_errors", "errors", "lost", "order_errors", "sink_malformed")
        bad = {k: data[k] for k in keys if k in data}
        raise ValueError(f"{run.filename}: run not clean: {bad}")
    return data


def metric_value(data: dict, path: tuple[str, ...]) -> float:
    value: object = data
    for key in path:
        if not isinstance(value, dict) or key not in value:
            raise ValueError(f"no {'.'.join(path)} in {data}")
        value = value[key]
    if not isinstance(value, int | float):
        raise ValueError(f"{'.'.join(path)} is {value!r}, not a number")
    return float(value)


def summarize(values: list[float]) -> Summary:
    if not values:
        raise ValueError("no values")
    return Summary(statistics.median(values), min(values), max(values), len(values))


def ratio(kernel: Summary | None, user: Summary | None) -> float | None:
    """kernel/user of the medians; None when either is missing or user is zero."""
    if kernel is None or user is None or user.median == 0:
        return None
    return kernel.median / user.median


def collect(outdir: Path, opts: Options) -> Results:
    """Read every run's output; a missing or unclean run becomes a problem, not a number."""
    res = Results(options=asdict(opts))
    values: dict[str, dict[int, dict[str, list[float]]]] = {}
    for run in plan(opts):
        path = outdir / run.filename
        try:
            data = parse_run(path.read_text() if path.exists() else "", run)
        except (ValueError, json.JSONDecodeError) as exc:
            err = outdir / f"{run.filename}.err"
            tail = err.read_text().strip()[-300:] if err.exists() else ""
            res.problems.append(f"{exc}{' -- ' + tail if tail else ''}")
            continue
        for name, (bench, mode, jpath) in METRICS.items():
            if (bench, mode) != (run.bench, run.mode):
                continue
            try:
                v = metric_value(data, jpath)
            except ValueError as exc:
                res.problems.append(f"{run.filename}: {exc}")
                continue
            values.setdefault(name, {}).setdefault(run.size, {}).setdefault(run.impl, []).append(v)
    for name, by_size in values.items():
        res.metrics[name] = {
            size: {impl: summarize(v) for impl, v in by_impl.items()} for size, by_impl in sorted(by_size.items())
        }
    return res


def _fmt(v: float) -> str:
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e3:
        return f"{v / 1e3:.1f}k"
    return f"{v:.1f}"


def format_table(res: Results, impls: tuple[str, ...]) -> str:
    out: list[str] = []
    titles = {
        "echo_bytes_per_s": "Table 2a: echo throughput, bytes/s (streaming)",
        "echo_lat_p50_us": "Table 2b: echo round trip p50, us (ping-pong, 1 connection; lower is better)",
        "echo_lat_p99_us": "Table 2c: echo round trip p99, us (lower is better)",
        "fwd_msgs_per_s": "Table 3a: forwarder msgs/s at the sinks",
        "fwd_payload_bytes_per_s": "Table 3b: forwarder payload bytes/s at the sinks",
    }
    for name, by_size in res.metrics.items():
        out.append(f"\n{titles.get(name, name)}")
        header = f"{'size':>7}" + "".join(f"{impl:>32}" for impl in impls)
        if set(IMPLS) <= set(impls):
            header += f"{'kernel/user':>13}"
        out.append(header)
        for size, row in by_size.items():
            cells = ""
            for impl in impls:
                s = row.get(impl)
                cells += f"{_fmt(s.median) + ' [' + _fmt(s.lo) + '-' + _fmt(s.hi) + ']':>32}" if s else f"{'-':>32}"
            if set(IMPLS) <= set(impls):
                r = ratio(row.get("kernel"), row.get("user"))
                cells += f"{r:>12.2f}x" if r is not None else f"{'-':>13}"
            out.append(f"{size:>7}{cells}")
    return "\n".join(out)


def csv_rows(res: Results) -> list[list[object]]:
    rows: list[list[object]] = [["metric", "size", "impl", "median", "min", "max", "n", "ratio_kernel_user"]]
    for name, by_size in res.metrics.items():
        for size, row in by_size.items():
            r = ratio(row.get("kernel"), row.get("user"))
            for impl, s in sorted(row.items()):
                rows.append([name, size, impl, s.median, s.lo, s.hi, s.n, "" if r is None else round(r, 4)])
    return rows


def to_json(res: Results) -> dict:
    metrics = {
        name: {
            str(size): {
                **{impl: asdict(s) for impl, s in row.items()},
                "ratio_kernel_user": ratio(row.get("kernel"), row.get("user")),
            }
            for size, row in by_size.items()
        }
        for name, by_size in res.metrics.items()
    }
    return {"options": res.options, "metrics": metrics, "problems": res.problems}


def plot(res: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("echo_bytes_per_s", "echo throughput (MB/s)", 1e-6),
        ("echo_lat_p50_us", "echo ping-pong p50 (us)", 1.0),
        ("fwd_msgs_per_s", "forwarder (k msgs/s)", 1e-3),
    ]
    panels = [p for p in panels if p[0] in res.metrics]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(5 * max(1, len(panels)), 4.2), squeeze=False)
    for ax, (name, label, scale) in zip(axes[0], panels, strict=False):
        by_size = res.metrics[name]
        sizes = list(by_size)
        for impl in IMPLS:
            pts = [(s, by_size[s][impl]) for s in sizes if impl in by_size[s]]
            if not pts:
                continue
            xs = [s for s, _ in pts]
            ax.errorbar(
                xs,
                [v.median * scale for _, v in pts],
                yerr=[[(v.median - v.lo) * scale for _, v in pts], [(v.hi - v.median) * scale for _, v in pts]],
                marker="o",
                capsize=3,
                label=impl,
            )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("buffer size (bytes)" if name.startswith("echo") else "payload size (bytes)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Slick: kernel vs user process (median over rounds, min-max bars)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def modules_missing(kernel_dir: Path) -> list[str]:
    """The Slick modules not installed under kernel_dir/lib/modules."""
    root = kernel_dir / "lib" / "modules"
    have = {p.name.split(".ko")[0] for p in root.rglob("*.ko*")} if root.is_dir() else set()
    return [m for m in MODULES if m not in have]


def build_tools() -> None:
    res = subprocess.run(
        ["make", "-s", "-j2", "-C", str(TOOLS_SRC), f"O={TOOLS_OUT}"], capture_output=True, text=True, check=False
    )
    if res.returncode != 0:
        raise SystemExit(
            f"building tools/slick failed (it needs gcc, make and libevent-dev):\n{res.stdout}{res.stderr}"
        )


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, Options]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel-dir", type=Path, default=REPO / "out/x86_64/vm")
    ap.add_argument("--quick", action="store_true", help="3 echo sizes, 2 forwarder sizes, 1 round of 1 s")
    ap.add_argument("--impls", nargs="+", choices=IMPLS, default=list(IMPLS))
    ap.add_argument("--seconds", type=float, help="measured seconds per run (default 3; --quick 1)")
    ap.add_argument("--warmup", type=float, help="seconds before measuring (default 1; --quick 0.5)")
    ap.add_argument("--rounds", type=int, help="interleaved rounds (default 3; --quick 1)")
    ap.add_argument("--echo-sizes", type=int, nargs="+", help=f"default {' '.join(map(str, ECHO_SIZES))}")
    ap.add_argument("--fwd-sizes", type=int, nargs="+", help=f"default {' '.join(map(str, FWD_SIZES))}")
    ap.add_argument("--echo-conns", type=int, default=8, help="streaming echo connections (default 8)")
    ap.add_argument("--fwd-conns", type=int, default=4, help="forwarder clients (default 4)")
    ap.add_argument("--sinks", type=int, default=2, help="sink backends, one key each (default 2)")
    ap.add_argument("--framed", action="store_true", help="framed transport (default unframed)")
    ap.add_argument(
        "--nodelay",
        action="store_true",
        help="both echo servers set TCP_NODELAY (default: neither, one segment per chunk)",
    )
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=3600, help="guest timeout, seconds")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    q = args.quick
    opts = Options(
        seconds=args.seconds if args.seconds is not None else (1.0 if q else 3.0),
        warmup=args.warmup if args.warmup is not None else (0.5 if q else 1.0),
        rounds=args.rounds if args.rounds is not None else (1 if q else 3),
        echo_sizes=tuple(args.echo_sizes or (QUICK_ECHO_SIZES if q else ECHO_SIZES)),
        fwd_sizes=tuple(args.fwd_sizes or (QUICK_FWD_SIZES if q else FWD_SIZES)),
        impls=tuple(i for i in IMPLS if i in args.impls),
        echo_conns=args.echo_conns,
        fwd_conns=args.fwd_conns,
        sinks=args.sinks,
        framed=args.framed,
        nodelay=args.nodelay,
    )
    if opts.seconds < 0.1 or opts.warmup < 0 or opts.rounds < 1 or args.cpus < 1:
        ap.error("--seconds must be >= 0.1, --warmup >= 0, --rounds and --cpus >= 1")
    if any(not 1 <= s <= 65536 for s in opts.echo_sizes) or any(not 8 <= s <= MAX_MSG - 64 for s in opts.fwd_sizes):
        ap.error(f"echo sizes must be in 1..65536, forwarder sizes in 8..{MAX_MSG - 64}")
    if not (1 <= opts.echo_conns <= 4096 and 1 <= opts.fwd_conns <= 4096 and 1 <= opts.sinks <= 64):
        ap.error("--echo-conns and --fwd-conns must be in 1..4096, --sinks in 1..64")
    return args, opts


def main(argv: list[str] | None = None) -> int:
    args, opts = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if not (args.kernel_dir / "manifest.json").exists():
        raise SystemExit(f"no kernel in {args.kernel_dir}: run `python3 build.py` first")
    if "kernel" in opts.impls:
        missing = modules_missing(args.kernel_dir)
        if missing:
            raise SystemExit(
                f"the Slick kernel modules {', '.join(missing)} are not in {args.kernel_dir}/lib/modules: "
                "build a kernel that has them (python3 build.py), or measure the user side alone with --impls user"
            )
    build_tools()
    outdir = results_dir("slick")
    runs = plan(opts)
    per_run = opts.seconds + opts.warmup + 0.5
    log.info("%d runs, about %.0f s in the guest; results in %s", len(runs), len(runs) * per_run, outdir)
    run_guest(args.kernel_dir, guest_script(opts), outdir, cpus=args.cpus, timeout=args.timeout)
    res = collect(outdir, opts)
    (outdir / "results.json").write_text(json.dumps(to_json(res), indent=1))
    with open(outdir / "results.csv", "w", newline="") as f:
        csv.writer(f).writerows(csv_rows(res))
    if res.metrics:
        plot(res, outdir / "slick.png")
    print(f"median of {opts.rounds} interleaved round(s) [min-max]; {opts.seconds:g} s per run")
    print(format_table(res, opts.impls))
    print(f"\ndata and plot: {outdir}")
    if res.problems:
        print("\nruns that were not clean:\n  " + "\n  ".join(res.problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

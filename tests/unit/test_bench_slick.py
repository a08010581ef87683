"""tools/bench_slick.py: the plan, slick_load output parsing, summaries and ratios (no guest)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.test_tools import load

bench = load("bench_slick")

# Captured from slick_load runs (user implementations, on the host).
ECHO_TPUT = (
    '{"mode": "echo", "pattern": "stream", "size": 1000, "conns": 8, "seconds": 2.000, "bytes": 775155000, '
    '"bytes_per_s": 387586240.7, "roundtrips": 0, "roundtrips_per_s": 0.0, "lat_us": null, "verify_errors": 0, '
    '"errors": 0, "ok": true}'
)
ECHO_LAT = (
    '{"mode": "echo", "pattern": "pingpong", "size": 32, "conns": 1, "seconds": 2.000, "bytes": 7010368, '
    '"bytes_per_s": 3505186.1, "roundtrips": 219074, "roundtrips_per_s": 109537.1, "lat_us": {"mean": 9.1, '
    '"p50": 7.6, "p90": 11.2, "p99": 18.5, "max": 4342.0}, "verify_errors": 0, "errors": 0, "ok": true}'
)
FWD = (
    '{"mode": "forward", "size": 128, "conns": 4, "sinks": 3, "framed": 0, "seconds": 2.015, "msgs": 643427, '
    '"msgs_per_s": 319332.1, "payload_bytes_per_s": 40874514.4, "sent": 867744, "received": 867744, "lost": 0, '
    '"order_errors": 0, "sink_malformed": 0, "errors": 0, "ok": true}'
)


def opts(**kw):
    base = dict(
        seconds=1.0,
        warmup=0.5,
        rounds=2,
        echo_sizes=(32, 1024),
        fwd_sizes=(128,),
        impls=("kernel", "user"),
        echo_conns=8,
        fwd_conns=4,
        sinks=2,
        framed=False,
    )
    base.update(kw)
    return bench.Options(**base)


def test_plan_interleaves_and_alternates_who_goes_first() -> None:
    runs = bench.plan(opts())
    assert len(runs) == 2 * (2 * 2 * 2 + 1 * 2)  # rounds * (echo sizes * impls * modes + fwd sizes * impls)
    echo_tput = [(r.round, r.size, r.impl) for r in runs if r.bench == "echo" and r.mode == "tput"]
    assert echo_tput == [
        (0, 32, "kernel"),
        (0, 32, "user"),
        (0, 1024, "user"),
        (0, 1024, "kernel"),
        (1, 32, "user"),
        (1, 32, "kernel"),
        (1, 1024, "kernel"),
        (1, 1024, "user"),
    ]
    assert len({r.filename for r in runs}) == len(runs), "two runs would write the same file"


def test_load_argv_per_mode() -> None:
    o = opts()
    lat = bench.load_argv(bench.Run("echo", "lat", "kernel", 64, 0), o, Path("/t"))
    assert lat[:2] == ["/t/slick_load", "echo"]
    assert "--pingpong" in lat and lat[lat.index("--conns") + 1] == "1" and lat[lat.index("--port") + 1] == "7007"
    tput = bench.load_argv(bench.Run("echo", "tput", "user", 64, 0), o, Path("/t"))
    assert "--pingpong" not in tput and tput[tput.index("--conns") + 1] == "8"
    assert tput[tput.index("--port") + 1] == "7107"
    fwd = bench.load_argv(bench.Run("forward", "tput", "kernel", 256, 0), opts(framed=True), Path("/t"))
    assert fwd[fwd.index("--ctl-port") + 1] == "9091" and fwd[fwd.index("--framed") + 1] == "1"
    assert fwd[fwd.index("--size") + 1] == "256"


def test_guest_script_starts_only_the_chosen_implementations() -> None:
    user_only = bench.guest_script(opts(impls=("user",)), python="/py", tools=Path("/t"))
    assert "modprobe" not in user_only and "/t/slick_echo_user --port 7107" in user_only
    both = bench.guest_script(opts(framed=True), python="/py", tools=Path("/t"))
    assert "modprobe slick_forwarder port=9090 ctl_port=9091 framed=1 max_msg=1048576" in both
    assert "--framed 1" in both and "modprobe -r slick_echo slick_forwarder" in both
    assert both.count("slick_load") == len(bench.plan(opts()))
    # Both echo servers run with the same socket options: neither or both set TCP_NODELAY.
    assert "nodelay=0" in both and "--nodelay" not in both
    nd = bench.guest_script(opts(nodelay=True), python="/py", tools=Path("/t"))
    assert "modprobe slick_echo port=7007 backlog=128 nodelay=1" in nd
    assert "slick_echo_user --port 7107 --backlog 128 --nodelay" in nd


def test_parse_run_accepts_clean_runs_only() -> None:
    run = bench.Run("echo", "lat", "user", 32, 0)
    data = bench.parse_run("noise\n" + ECHO_LAT + "\n", run)
    assert bench.metric_value(data, ("lat_us", "p50")) == 7.6
    with pytest.raises(ValueError, match="no JSON"):
        bench.parse_run("", run)
    with pytest.raises(ValueError, match="output is for"):
        bench.parse_run(ECHO_LAT, bench.Run("echo", "lat", "user", 64, 0))
    lossy = json.loads(FWD) | {"lost": 3, "ok": False}
    with pytest.raises(ValueError, match="'lost': 3"):
        bench.parse_run(json.dumps(lossy), bench.Run("forward", "tput", "user", 128, 0))
    with pytest.raises(ValueError, match=r"no lat_us\.p50"):
        bench.metric_value(json.loads(ECHO_TPUT), ("lat_us", "p50"))  # null in streaming mode


def test_summary_and_ratio() -> None:
    s = bench.summarize([3.0, 1.0, 2.0])
    assert (s.median, s.lo, s.hi, s.n) == (2.0, 1.0, 3.0, 3)
    assert bench.ratio(bench.summarize([6.0]), bench.summarize([2.0])) == 3.0
    assert bench.ratio(None, s) is None
    assert bench.ratio(s, bench.summarize([0.0])) is None
    with pytest.raises(ValueError):
        bench.summarize([])


def _write(outdir: Path, run, text: str) -> None:
    (outdir / run.filename).write_text(text)


def test_collect_table_csv_json(tmp_path: Path) -> None:
    o = opts(rounds=1, echo_sizes=(32,), fwd_sizes=(128,))
    for run in bench.plan(o):
        if run.bench == "forward":
            factor = 2.0 if run.impl == "kernel" else 1.0
            data = json.loads(FWD) | {"msgs_per_s": 1000.0 * factor}
            _write(tmp_path, run, json.dumps(data))
        elif run.mode == "lat":
            _write(tmp_path, run, ECHO_LAT)
        elif run.impl == "kernel":
            (tmp_path / f"{run.filename}.err").write_text("slick_load: connect to port 7007: Connection refused\n")
        else:
            _write(tmp_path, run, ECHO_TPUT.replace('"size": 1000', '"size": 32'))
    res = bench.collect(tmp_path, o)
    assert len(res.problems) == 1 and "Connection refused" in res.problems[0]
    assert "kernel" not in res.metrics["echo_bytes_per_s"][32]
    assert bench.ratio(*(res.metrics["fwd_msgs_per_s"][128][i] for i in ("kernel", "user"))) == 2.0
    table = bench.format_table(res, o.impls)
    assert "2.00x" in table and "Table 3a" in table
    rows = bench.csv_rows(res)
    assert rows[0][0] == "metric" and ["fwd_msgs_per_s", 128, "kernel", 2000.0, 2000.0, 2000.0, 1, 2.0] in rows
    doc = bench.to_json(res)
    assert doc["metrics"]["fwd_msgs_per_s"]["128"]["ratio_kernel_user"] == 2.0
    assert doc["problems"] == res.problems
    json.dumps(doc)  # serializable


def test_modules_missing(tmp_path: Path) -> None:
    assert bench.modules_missing(tmp_path) == ["slick_echo", "slick_forwarder"]
    mod = tmp_path / "lib/modules/6.12.117-fastsock/kernel/net/slick"
    mod.mkdir(parents=True)
    (mod / "slick_echo.ko").write_bytes(b"")
    (mod / "slick_forwarder.ko.xz").write_bytes(b"")
    assert bench.modules_missing(tmp_path) == []


def test_args_quick_and_validation() -> None:
    _, o = bench.parse_args(["--quick"])
    assert o.rounds == 1 and o.echo_sizes == bench.QUICK_ECHO_SIZES and o.fwd_sizes == bench.QUICK_FWD_SIZES
    _, o = bench.parse_args([])
    assert o.echo_sizes == tuple(32 << i for i in range(10)) and o.fwd_sizes == (128, 256, 512, 1024, 2048, 4096)
    with pytest.raises(SystemExit):
        bench.parse_args(["--echo-sizes", "0"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--rounds", "0"])

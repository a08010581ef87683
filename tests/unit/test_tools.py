"""The report tools' parsers, on output captured from real runs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools"


def load(name: str):
    sys.path.insert(0, str(TOOLS))
    try:
        spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod  # dataclasses look their module up there
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(TOOLS))


LOCK_STAT = """\
lock_stat version 0.4
-----------------------------------------------------------------------------------------------------------------
                              class name    con-bounces    contentions   waittime-min   waittime-max waittime-total   waittime-avg    acq-bounces   acquisitions   holdtime-min   holdtime-max holdtime-total   holdtime-avg
-----------------------------------------------------------------------------------------------------------------
                           slock-AF_INET:            50             50           4.55        2900.81        8517.21         170.34            797          10383           1.23        3784.55      199583.54          19.22
                           -------------
                           slock-AF_INET             48          [<00000000f24ec04d>] lock_sock_nested+0x4b/0xb9
                           slock-AF_INET              2          [<0000000094376520>] release_sock+0x16/0x135
      &icsk->icsk_accept_queue.rskq_lock:             0              0           0.00           0.00           0.00           0.00            373            601           3.03          19.93        2502.85           4.16
                   &sb->s_type->i_mutex_key#5-W:     1     1     0.00     0.00     0.00     0.00     10     20     0.00     0.00     0.00     0.00
                   &sb->s_type->i_mutex_key#5-R:     0     0     0.00     0.00     0.00     0.00      9     40     0.00     0.00     0.00     0.00
"""

WRK = """\
Running 4s test @ http://127.0.0.1:8088/index.html
  2 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.85ms    1.90ms  21.98ms   67.55%
    Req/Sec   724.08     48.13   808.00     76.25%
  5844 requests in 4.06s, 1.64MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:   1439.56
Transfer/sec:    414.72KB
"""


def test_lock_stat_rows_not_contention_points() -> None:
    classes = load("lock_report").parse_lock_stat(LOCK_STAT)
    slock = classes["slock-AF_INET"]
    assert (slock.con_bounces, slock.contentions, slock.acq_bounces, slock.acquisitions) == (50, 50, 797, 10383)
    assert classes["&icsk->icsk_accept_queue.rskq_lock"].acq_bounces == 373
    assert len([n for n in classes if n.startswith("slock")]) == 1


def test_lock_stat_listen_path_classes() -> None:
    lr = load("lock_report")
    names = lr.parse_lock_stat(LOCK_STAT)
    assert {n for n in names if lr.LISTEN_PATH.search(n)} == {"slock-AF_INET", "&icsk->icsk_accept_queue.rskq_lock"}
    assert not lr.LISTEN_PATH.search("&sb->s_type->i_mutex_key#5-W")


def test_wrk_output() -> None:
    out = load("bench_nginx").parse_wrk(WRK)
    assert out == {"cps": 1439.56, "requests": 5844, "errors": 3, "non2xx": 4}


def test_wrk_garbage_is_an_error() -> None:
    with pytest.raises(SystemExit, match="cannot read wrk output"):
        load("bench_nginx").parse_wrk("wrk: connection refused\n")

"""The report tools' parsers, on output captured from real runs."""

from __future__ import annotations

import importlib.util
import re
import subprocess
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

# perf 6.1 `perf lock contention` on the vm kernel (tracepoint mode), plus a caller seen twice.
CONTENTION = """\
 contended   total wait     max wait     avg wait         type   caller

         3      5.33 ms      5.33 ms      1.78 ms        mutex   __inet_hash_connect+0xdb
         1      5.16 ms      5.16 ms      5.16 ms      rwsem:W   netfs_start_io_direct+0x43
         2     12.50 us      8.00 us      6.25 us     spinlock   __inet_hash_connect+0xdb
         1         0 ns         0 ns         0 ns     rwlock:W   __x64_sys_exit_group
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


def test_perf_lock_contention_rows() -> None:
    rows = load("lock_report").parse_contention(CONTENTION)
    assert set(rows) == {"__inet_hash_connect+0xdb", "netfs_start_io_direct+0x43", "__x64_sys_exit_group"}
    ihc = rows["__inet_hash_connect+0xdb"]
    assert ihc.contended == 5 and ihc.wait_total_ns == pytest.approx(5.33e6 + 12.5e3)
    assert rows["netfs_start_io_direct+0x43"].kind == "rwsem:W"
    assert rows["__x64_sys_exit_group"].wait_total_ns == 0
    assert load("lock_report").parse_contention("perf: no lock contention data\n") == {}


def test_perf_lock_script_checks_tracepoint_and_runs_every_variant() -> None:
    lr = load("lock_report")
    script = lr.perf_guest_script(50, Path("/lib/libfsocket.so"))
    assert "events/lock/contention_begin" in script and "exit 2" in script
    for v in lr.VARIANTS:
        assert f"perf lock contention -i /tmp/{v}.data" in script
    assert script.count("LD_PRELOAD=/lib/libfsocket.so") == 4  # portable and fastsocket: warm-up + recorded run


def test_wrk_output() -> None:
    out = load("bench_nginx").parse_wrk(WRK)
    assert out == {"cps": 1439.56, "requests": 5844, "errors": 3, "non2xx": 4}


def test_paired_ratio_compares_runs_of_the_same_round() -> None:
    pr = load("bench_nginx").paired_ratio
    base = [{"cps": 100.0}, {"cps": 300.0}, {"cps": 200.0}]
    runs = [{"cps": 110.0}, {"cps": 270.0}, {"cps": 200.0}]
    # Medians alone would say 200 vs 200 (1.0); per round: 1.1, 0.9, 1.0.
    assert pr(runs, base) == {"median": 1.0, "min": 0.9, "max": 1.1}
    assert pr([{"cps": 5.0}], [{"cps": 0.0}]) == {"median": None, "min": None, "max": None}
    with pytest.raises(ValueError):
        pr(runs, base[:2])


def test_nginx_bench_veth_puts_wrk_across_rps() -> None:
    bn = load("bench_nginx")
    lo = bn.guest_script(Path("/k"), 2, 3, 1)
    assert "netns" not in lo and "wrk -t2 -c8 -d3s -H 'Connection: close' http://127.0.0.1:8088/" in lo
    veth = bn.guest_script(Path("/k"), 4, 3, 1, net="veth")
    assert "echo f > /sys/class/net/vnS/queues/rx-0/rps_cpus" in veth
    assert "ip netns exec nbC wrk -t4 -c16 -d3s -H 'Connection: close' http://10.96.0.2:8088/" in veth
    assert veth.count("listen 10.96.0.2:8088 reuseport;") == 1  # warm-up and the others: stock's listen
    assert veth.count("listen 10.96.0.2:8088;") == 3 + 1


def test_nginx_bench_client_cpus_keep_wrk_off_the_servers_cpus() -> None:
    bn = load("bench_nginx")
    script = bn.guest_script(Path("/k"), 2, 3, 1, net="veth", client_cpus=2)
    assert "echo 3 > /sys/class/net/vnS/queues/rx-0/rps_cpus" in script  # nginx's SYNs on CPUs 0-1
    assert "echo c > /sys/class/net/vnC/queues/rx-0/rps_cpus" in script  # wrk's softirqs on CPUs 2-3
    assert script.count("taskset -c 0-1 ") == 4 + 1 and "worker_cpu_affinity 01 10;" in script  # + warm-up
    assert script.count("taskset -c 0-1 env LD_PRELOAD=/k/libfsocket.so nginx -c") == 2
    assert "ip netns exec nbC taskset -c 2-3 wrk -t2 -c8 -d3s" in script
    assert bn.worker_affinity(3) == "001 010 100" and bn.cpu_mask(4, 2) == "30"
    with pytest.raises(ValueError, match="need --net veth"):
        bn.guest_script(Path("/k"), 2, 3, 1, client_cpus=2)


def test_wrk_garbage_is_an_error() -> None:
    with pytest.raises(SystemExit, match="cannot read wrk output"):
        load("bench_nginx").parse_wrk("wrk: connection refused\n")


# -- rfd_ethtool: the printed rules ---------------------------------------------------------


def test_rfd_ethtool_rule_per_cpu_and_family(capsys) -> None:
    et = load("rfd_ethtool")
    assert et.main(["--dev", "eth0", "--cpus", "6", "--queue", "2=9"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "ethtool -K eth0 ntuple on"
    rules = [line for line in out if line.startswith("ethtool -N")]
    assert len(rules) == 12  # 6 CPUs x tcp4, tcp6
    # 6 CPUs -> mask 7: the low 3 bits compared, the other 13 ignored (set in ethtool's "m").
    assert rules[0] == "ethtool -N eth0 flow-type tcp4 dst-port 0 m 0xfff8 action 0 loc 1000"
    assert rules[2] == "ethtool -N eth0 flow-type tcp4 dst-port 2 m 0xfff8 action 9 loc 1002"
    assert rules[11] == "ethtool -N eth0 flow-type tcp6 dst-port 5 m 0xfff8 action 5 loc 1011"


def test_rfd_ethtool_possible_cpus_and_mask() -> None:
    et = load("rfd_ethtool")
    assert et.possible_cpus("0-3\n") == 4
    assert et.possible_cpus("0\n") == 1
    assert et.possible_cpus("0-1,4-5\n") == 6
    assert [et.cpu_mask(n) for n in (1, 2, 3, 4, 5, 64, 65)] == [0, 1, 3, 3, 7, 63, 127]


@pytest.mark.parametrize(
    "argv",
    [
        ["--dev", "eth0", "--queue", "x=1"],
        ["--dev", "eth0", "--cpus", "2", "--queue", "5=1"],
        ["--dev", "eth0; reboot"],
        ["--dev", "eth0", "--cpus", "0"],
        ["--dev", "eth0", "--loc-base", "-1"],
    ],
)
def test_rfd_ethtool_rejects_bad_input(argv, capsys) -> None:
    et = load("rfd_ethtool")
    with pytest.raises(SystemExit) as exc:
        et.main(argv)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


# -- bench_proxy: counters and the report from captured files ---------------------------------

FS_BEFORE = """fastsocket 0.3
listen_spawn 1
groups 0
rfd_ports 1
rfd_steer 1
rfd_cpu_mask 1
cpu listen_local listen_global accept_local accept_empty spawned migrated port_scan port_fallback rx_active rx_passive
cpu0 0 0 0 0 0 0 10 0 100 50
cpu1 0 0 0 0 0 0 12 1 90 40
"""


def test_bench_proxy_sums_fastsocket_counters() -> None:
    bp = load("bench_proxy")
    total = bp.parse_fastsocket(FS_BEFORE)
    assert total["port_scan"] == 22 and total["port_fallback"] == 1 and total["rx_active"] == 190
    assert bp.parse_fastsocket("") == {}


def test_bench_proxy_collect_ratios(tmp_path: Path) -> None:
    bp = load("bench_proxy")
    wrk = "  {n} requests in 5.00s, 1.00MB read\nRequests/sec:    {rps}\n"
    (tmp_path / "lockstat-available").write_text("0\n")
    for v, rps, share in (("stock", 100.0, 0.5), ("fastsocket", 120.0, 1.0), ("fastsocket-ehash", 110.0, 1.0)):
        (tmp_path / f"{v}-0.wrk").write_text(wrk.format(n=int(rps * 5), rps=rps))
        (tmp_path / f"{v}-0.probe").write_text(
            f'{{"connections": 40, "reply_on_cpu_share": {share}, "port_encodes_cpu_share": {share}, "conns": []}}'
        )
        (tmp_path / f"{v}-0.fs-before").write_text(FS_BEFORE if v != "stock" else "")
        after = FS_BEFORE.replace("cpu0 0 0 0 0 0 0 10 0 100 50", "cpu0 0 0 0 0 0 0 610 0 6100 50")
        (tmp_path / f"{v}-0.fs-after").write_text(after if v != "stock" else "")
        (tmp_path / f"{v}-0.before").write_text("ctxt 100\n")
        (tmp_path / f"{v}-0.after").write_text(f"ctxt {100 + int(rps * 5) * (2 if v == 'stock' else 1)}\n")
    data = bp.collect(tmp_path, 1)
    assert data["variants"]["stock"]["events"] == {"ctxt": 2.0}
    assert data["variants"]["fastsocket"]["events"] == {"ctxt": 1.0}
    assert data["cps_ratio_fastsocket"] == 1.2 and data["cps_ratio_fastsocket-ehash"] == 1.1
    f = data["variants"]["fastsocket"]
    assert f["reply_on_cpu_share"] == 1.0 and data["variants"]["stock"]["reply_on_cpu_share"] == 0.5
    assert f["fastsocket_per_request"]["port_scan"] == 1.0  # 600 scans over 600 requests
    assert f["fastsocket_per_request"]["rx_active"] == 10.0


SNAP_BEFORE = """\
cpu  100 0 200 3000 0 0 5 0 0 0
intr 12345 0 9 0
ctxt 1000
btime 1763890000
softirq 500 0 100 0 200 0 0 10 50 0 140
                    CPU0       CPU1
          HI:          0          0
       TIMER:         40         60
      NET_TX:          1          2
      NET_RX:        100        100
       SCHED:         30         20
     RCU:             70         70
            CPU0       CPU1
   0:         36          0   IO-APIC   2-edge      timer
 NMI:          0          0   Non-maskable interrupts
 RES:         10         20   Rescheduling interrupts
 CAL:          5          5   Function call interrupts
nr_free_pages 5000
pgalloc_dma 10
pgalloc_normal 400
pgfree 500
pgfault 900
"""


def test_kcounters_per_connection_from_proc_snapshots() -> None:
    kc = load("kcounters")
    after = (
        SNAP_BEFORE.replace("ctxt 1000", "ctxt 1600")
        .replace("NET_RX:        100        100", "NET_RX:        300        200")
        .replace("RES:         10         20", "RES:         70         60")
        .replace("pgalloc_dma 10", "pgalloc_dma 110")
        .replace("pgalloc_normal 400", "pgalloc_normal 700")
        .replace("pgfault 900", "pgfault 1150")
    )
    per = kc.per_connection(SNAP_BEFORE, after, 100)
    assert per["ctxt"] == 6.0
    assert per["NET_RX"] == 3.0  # summed over both CPUs
    assert per["ipi_resched"] == 1.0
    assert per["ipi_call"] == 0.0 and per["TIMER"] == 0.0
    assert per["pgalloc"] == 4.0  # summed over zones
    assert per["pgfault"] == 2.5 and per["pgfree"] == 0.0
    assert "nr_free_pages" not in per
    # the /proc/stat "softirq" total and the IRQ-numbered rows are not mistaken for counters
    assert "softirq" not in per and "0" not in per
    with pytest.raises(ValueError):
        kc.per_connection(SNAP_BEFORE, after, 0)


def test_kcounters_table_and_median() -> None:
    kc = load("kcounters")
    med = kc.median_counters([{"ctxt": 1.0}, {"ctxt": 3.0, "NET_RX": 2.0}, {"ctxt": 2.0}])
    assert med == {"ctxt": 2.0, "NET_RX": 2.0}
    table = kc.format_table({"stock": {"ctxt": 4.0}, "fastsocket": {"ctxt": 3.5}})
    assert table.splitlines()[2].split() == ["fastsocket", "3.50"]


# perf 6.1 `perf report --stdio -n --sort comm,dso,sym`, as the guest writes it.
PERF_REPORT = """\
# Samples: 153K of event 'cpu-clock'
# Event count (approx.): 3072440000
#
# Overhead       Samples  Command          Shared Object           Symbol
# ........  ............  ...............  ......................  ..........................
#
     3.42%          5325  wrk              wrk                     [.] http_parser_execute
     1.68%          2617  wrk              [kernel.vmlinux]        [k] sk_clone_lock
     0.02%            28  nginx            libfsocket.so           [.] accept4
     0.01%            10  nginx            [kernel.vmlinux]        [k] sk_clone_lock
     0.00%             1  kworker/u4:0-fl  [kernel.vmlinux]        [k] finish_task_switch.isra.0
"""


def test_profile_parses_perf_report_and_normalises_per_request() -> None:
    pn = load("profile_nginx")
    rows = pn.parse_perf_report(PERF_REPORT)
    assert rows[("wrk", "[kernel.vmlinux]", "sk_clone_lock")] == 2617
    assert rows[("nginx", "libfsocket.so", "accept4")] == 28
    assert rows[("kworker/u4:0-fl", "[kernel.vmlinux]", "finish_task_switch.isra.0")] == 1
    assert sum(rows.values()) == 5325 + 2617 + 28 + 10 + 1  # headers are not rows
    by_comm = pn.per_thousand(rows, 2000, "comm")
    assert by_comm[("nginx",)] == 19.0 and by_comm[("wrk",)] == 3971.0
    by_sym = pn.per_thousand(rows, 1000, "sym")
    assert by_sym[("nginx", "sk_clone_lock")] == 10.0
    with pytest.raises(ValueError):
        pn.per_thousand(rows, 0, "sym")


def test_profile_diff_puts_the_largest_change_first() -> None:
    pn = load("profile_nginx")
    rows = pn.diff_table({("a",): 10.0, ("b",): 5.0}, {("a",): 11.0, ("b",): 1.0, ("c",): 2.0}, top=2)
    assert rows == [(("b",), 5.0, 1.0, -4.0), (("c",), 0.0, 2.0, 2.0)]


def test_profile_script_alternates_the_order_and_records_every_run() -> None:
    pn = load("profile_nginx")
    script = pn.guest_script(Path("/k"), "fastsocket", 1, 3, 2, 20000)
    runs = re.findall(r"> \$OUT/(\S+)\.wrk", script)
    assert runs == ["stock-0", "fastsocket-0", "fastsocket-1", "stock-1"]
    assert script.count("perf record") == 4 and "-c 20000" in script
    assert script.count("LD_PRELOAD=/k/libfsocket.so") == 2


KALLSYMS = """\
ffffffff81000000 T _stext
ffffffff81001000 t do_one_initcall
ffffffff81002000 T tcp_v4_rcv
ffffffff81003000 d some_data
ffffffffc0001000 t fsk_accept\t[fastsocket]
"""


def test_insncount_names_kernel_blocks_by_symbol_and_lumps_user_space(tmp_path: Path) -> None:
    ic = load("insncount")
    snap = tmp_path / "insns.1"
    recs = [(0xFFFFFFFF81002010, 7), (0xFFFFFFFF81002400, 3), (0x401000, 5), (0x7F0000001000, 6)]
    recs += [(0xFFFFFFFFC0001004, 4), (0xFFFFFFFF81001800, 1), (0xFFFFFFFFC0021000, 9), (0xFFFFFE0000001000, 2)]
    snap.write_bytes(b"".join(ic.struct.pack("<QQ", a, n) for a, n in recs))
    counts = ic.read_snapshot(snap)
    assert sum(counts.values()) == 37
    syms = ic.by_symbol(counts, ic.Kallsyms(KALLSYMS))
    assert syms["tcp_v4_rcv"] == 10 and syms["do_one_initcall"] == 1
    assert syms["fsk_accept [fastsocket]"] == 4
    assert syms[ic.USER] == 11
    # far past the last symbol (a module's end) and below all of them (entry trampolines): no name
    assert syms[ic.UNKNOWN] == 11
    snap.write_bytes(b"\0" * 15)
    with pytest.raises(ValueError, match="whole number"):
        ic.read_snapshot(snap)
    with pytest.raises(ValueError, match="kptr_restrict"):
        ic.Kallsyms("0000000000000000 T _stext\n")


def test_insncount_plugin_and_marker_build_and_the_marker_is_a_nop(tmp_path: Path) -> None:
    ic = load("insncount")
    tools = ic.build(tmp_path)
    syms = subprocess.run(["nm", "-D", str(tools.plugin)], capture_output=True, text=True, check=True).stdout
    assert re.search(r" T qemu_plugin_install$", syms, re.M) and re.search(r" [BD] qemu_plugin_version$", syms, re.M)
    assert subprocess.run([str(tools.marker)], check=False).returncode == 0  # on the host: a NOP
    assert bytes.fromhex("0f1f8400" + "46534d4b") in tools.marker.read_bytes()
    assert tools.qemu_opts(tmp_path / "insns") == f"-plugin {tools.plugin},out={tmp_path / 'insns'}"
    with pytest.raises(ValueError):
        tools.qemu_opts(Path("/a,b/insns"))


# Drives the plugin's own code without QEMU: the harness supplies the plugin API, translates one
# fake block, replays loads and stores from given vCPUs and takes a snapshot.
LINES_HARNESS = r"""
#include <stdint.h>
#include <stddef.h>
struct qemu_plugin_insn { unsigned char data[8]; size_t size; };
struct qemu_plugin_tb { struct qemu_plugin_insn insn[2]; uint64_t vaddr; };
static void *mem_cb, *mem_ud, *trans_cb;
#include "insncount.c"
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, tb_trans_cb_t cb) { (void)id; trans_cb = cb; }
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op, void *ptr,
                          uint64_t imm) { (void)tb; (void)op; *(uint64_t *)ptr += imm; }
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn, vcpu_udata_cb_t cb,
                        enum qemu_plugin_cb_flags flags, void *userdata)
{ (void)insn; (void)cb; (void)flags; (void)userdata; }
void qemu_plugin_register_vcpu_mem_cb(struct qemu_plugin_insn *insn, mem_cb_t cb,
                      enum qemu_plugin_cb_flags flags, enum qemu_plugin_mem_rw rw, void *userdata)
{ (void)insn; (void)flags; (void)rw; mem_cb = (void *)cb; mem_ud = userdata; }
_Bool qemu_plugin_mem_is_store(qemu_plugin_meminfo_t info) { return info & 1; }
unsigned int qemu_plugin_mem_size_shift(qemu_plugin_meminfo_t info) { return info >> 1; }
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, udata_cb_t cb, void *userdata)
{ (void)id; (void)cb; (void)userdata; }
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb) { (void)tb; return 2; }
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb) { return tb->vaddr; }
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t i)
{ return (struct qemu_plugin_insn *)&tb->insn[i]; }
const void *qemu_plugin_insn_data(const struct qemu_plugin_insn *insn) { return insn->data; }
size_t qemu_plugin_insn_size(const struct qemu_plugin_insn *insn) { return insn->size; }
void qemu_plugin_outs(const char *s) { fputs(s, stderr); }

int main(int argc, char **argv)
{
    qemu_info_t info = { .system_emulation = 1, .system = { 4, 4 } };
    struct qemu_plugin_tb tb = { { { {0}, 1 }, { {0}, 1 } }, 0xffffffff81002000ull };
    unsigned int vcpu, store;
    unsigned long long addr;

    if (qemu_plugin_install(1, &info, argc - 1, argv + 1))
        return 2;
    ((tb_trans_cb_t)trans_cb)(1, &tb);
    while (scanf("%u %u %llx", &vcpu, &store, &addr) == 3)
        ((mem_cb_t)mem_cb)(vcpu, store, addr, mem_ud);
    snapshot(0, NULL);
    return 0;
}
"""


def test_insncount_lines_counts_transfers_between_vcpus_in_kernel_memory(tmp_path: Path) -> None:
    ic = load("insncount")
    (tmp_path / "harness.c").write_text(LINES_HARNESS)
    exe = tmp_path / "harness"
    subprocess.run(["gcc", "-O2", "-Wall", "-I", str(ic.SRC), "-o", str(exe), str(tmp_path / "harness.c")], check=True)

    def transfers(accesses: str) -> int:
        for f in tmp_path.glob("[il]*.0"):
            f.unlink()
        args = [str(exe), f"out={tmp_path / 'insns'}", f"lines={tmp_path / 'lines'}"]
        subprocess.run(args, input=accesses, text=True, check=True)
        assert ic.read_snapshot(tmp_path / "insns.0") == {0xFFFFFFFF81002000: 2}
        return sum(ic.read_snapshot(tmp_path / "lines.0").values())

    line, other = "ffff888000001000", "ffff888000001040"
    assert transfers(f"0 1 {line}\n0 0 {line}\n0 1 {line}\n") == 0  # one vCPU: never
    assert transfers(f"0 1 {line}\n1 0 {line}\n") == 1  # read of a line modified elsewhere
    assert transfers(f"0 1 {line}\n1 0 {line}\n1 0 {line}\n0 0 {line}\n") == 1  # then shared: free
    assert transfers(f"0 0 {line}\n1 0 {line}\n2 0 {line}\n") == 0  # read-mostly data does not bounce
    assert transfers(f"0 0 {line}\n1 0 {line}\n1 1 {line}\n") == 1  # a store invalidates the other copy
    assert transfers(f"0 1 {line}\n1 1 {line}\n0 1 {line}\n1 1 {line}\n") == 3  # a lock ping-pong
    far = "ffffc90000001000"  # vmalloc: another leaf of the table
    assert transfers(f"0 1 {line}\n1 1 {other}\n1 1 {far}\n0 1 {line}\n0 0 {far}\n") == 1  # only far bounced
    assert transfers("0 1 00007f0000001000\n1 0 00007f0000001000\n") == 0  # user space: not modelled
    assert transfers(f"0 1 {line}\n1 1 {line[:-1]}8\n") == 1  # same 64-byte line, other offset
    # an 8-byte store (size shift 3: info 7) at 0x...103c spans the lines at 0x...1000 and 0x...1040
    assert transfers(f"0 1 {line}\n0 1 {other}\n1 7 ffff88800000103c\n") == 2
    assert transfers(f"0 1 {other}\n1 7 ffff888000001038\n") == 0  # 0x1038-0x103f: one line
    bad = subprocess.run([str(exe), f"out={tmp_path / 'i'}", "lines="], capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "unknown argument" in bad.stderr
    opts = ic.build(tmp_path / "t").qemu_opts(tmp_path / "insns", tmp_path / "lines")
    assert opts.endswith(f",out={tmp_path / 'insns'},lines={tmp_path / 'lines'}")


def test_break_even_weighs_extra_instructions_against_saved_transfers() -> None:
    ic = load("insncount")
    assert ic.break_even(1000, -200).endswith("costs more than 5.0 instruction times")
    assert ic.break_even(-1000, 200).endswith("costs less than 5.0 instruction times")
    assert ic.break_even(-5, -1) == "fewer instructions and fewer transfers: cheaper whatever a transfer costs"
    assert ic.break_even(0, -1) == "fewer transfers: cheaper whatever a transfer costs"
    assert ic.break_even(-5, 0) == "fewer instructions: cheaper whatever a transfer costs"
    assert "dearer" in ic.break_even(5, 1) and "dearer" in ic.break_even(5, 0)
    assert ic.break_even(0, 0) == "the same instructions and transfers"


def test_insncount_names_user_addresses_by_dso_and_function(tmp_path: Path) -> None:
    ic = load("insncount")
    tools = ic.build(tmp_path)
    syms = dict((n, a) for a, n in ic.nm_symbols(str(tools.plugin)))
    assert "tb_trans" in syms  # a static function: the file's own symbol table
    base = 0x7F0000000000
    maps = f"{base:x}-{base + 0x100000:x} r-xp 00000000 00:1f 123 {tools.plugin}\n"
    maps += "7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]\n"
    um = ic.UserMaps([maps, maps])
    assert um.name(base + syms["tb_trans"] + 3) == "[user] insncount.so tb_trans"
    assert um.name(base + 0x100000) == ic.USER  # past the mapping
    assert um.name(0x7FFD00000010) == ic.USER  # not executable, no file
    counts = ic.Counter({base + syms["snapshot"]: 5, 0x401000: 2, 0xFFFFFFFF81002000: 1})
    named = ic.by_symbol(counts, ic.Kallsyms(KALLSYMS), um)
    assert named == {"[user] insncount.so snapshot": 5, ic.USER: 2, "tcp_v4_rcv": 1}


def test_profile_count_script_puts_wrk_behind_veth_on_its_own_cpus() -> None:
    pn, bn = load("profile_nginx"), load("bench_nginx")
    script = pn.count_script(Path("/k"), "fastsocket", 2, 3, 1, Path("/m/fsmark"), client_cpus=2, per_cpu=16)
    runs = [line for line in script.splitlines() if " wrk -t" in line and "$OUT/" in line]
    assert len(runs) == 2 and all(r.startswith(f"ip netns exec nbC {bn.taskset(2, 2)}wrk -t2 -c32 ") for r in runs)
    assert script.index("> /dev/null\nkill $NGINX") < script.index("/m/fsmark")  # a warm-up run, uncounted
    assert all("http://10.96.0.2:8088/" in r for r in runs)
    assert "ip netns add nbC" in script and f"{bn.taskset(0, 2)}env LD_PRELOAD=/k/libfsocket.so nginx" in script
    loop = pn.count_script(Path("/k"), "fastsocket", 2, 3, 1, Path("/m/fsmark"))
    assert "nbC" not in loop and "wrk -t2 -c8 -d3s -H 'Connection: close' http://127.0.0.1:8088/" in loop
    with pytest.raises(ValueError, match="veth"):
        bn.client_network(2, "loopback", 2)


def test_profile_count_script_puts_each_run_between_two_markers_and_reads_them(tmp_path: Path) -> None:
    pn = load("profile_nginx")
    ic = load("insncount")
    script = pn.count_script(Path("/k"), "fastsocket", 2, 3, 2, Path("/m/fsmark"))
    lines = script.splitlines()
    runs = [i for i, line in enumerate(lines) if line.startswith("wrk ") and "$OUT/" in line]
    assert [lines[i].split("$OUT/")[1] for i in runs] == [f"{t}.wrk" for t in pn.run_order("fastsocket", 2)]
    warm = [i for i, line in enumerate(lines) if line.startswith("wrk ") and line.endswith("> /dev/null")]
    assert len(warm) == 1 and warm[0] < lines.index("/m/fsmark") < runs[0]  # before any count
    assert all(lines[i - 1] == lines[i + 1] == "/m/fsmark" for i in runs)
    assert script.count("/m/fsmark") == 8
    order = pn.run_order("fastsocket", 2)
    for i, tag in enumerate(order):
        (tmp_path / f"{tag}.kallsyms").write_text(KALLSYMS)
        (tmp_path / f"{tag}.wrk").write_text(
            f"  {1000 * (i + 1)} requests in 3.00s, 1.00MB read\nRequests/sec:    333.33\n"
        )
        per = 100 if tag.startswith("stock") else 110
        (tmp_path / f"insns.{2 * i}").write_bytes(ic.struct.pack("<QQ", 0xFFFFFFFF81002000, 10**9))
        (tmp_path / f"insns.{2 * i + 1}").write_bytes(
            ic.struct.pack("<QQ", 0xFFFFFFFF81002000, per * 1000 * (i + 1))
            + ic.struct.pack("<QQ", 0x400000, 5 * 1000 * (i + 1))
        )
    data = pn.collect_counts(tmp_path, "fastsocket", 2)
    assert data["stock"]["requests"] == 1000 + 4000 and data["fastsocket"]["requests"] == 2000 + 3000
    assert data["stock"]["per_request"] == {"tcp_v4_rcv": 100.0, ic.USER: 5.0}
    assert data["fastsocket"]["per_request"]["tcp_v4_rcv"] == 110.0
    assert pn.collect_counts(tmp_path, "fastsocket", 2)["stock"]["per_request"] != {}
    for i, tag in enumerate(order):  # --lines: the transfers of the same runs, by the same symbols
        n = 30 if tag.startswith("stock") else 3
        for k in (2 * i, 2 * i + 1):
            (tmp_path / f"lines.{k}").write_bytes(ic.struct.pack("<QQ", 0xFFFFFFFF81002000, n * 1000 * (i + 1)))
    lines_data = pn.collect_counts(tmp_path, "fastsocket", 2, stem="lines")
    assert lines_data["stock"]["per_request"] == {"tcp_v4_rcv": 30.0}
    assert lines_data["fastsocket"]["per_request"] == {"tcp_v4_rcv": 3.0}
    (tmp_path / "insns.7").unlink()
    with pytest.raises(SystemExit, match="expected 8 instruction snapshots"):
        pn.collect_counts(tmp_path, "fastsocket", 2)
    (tmp_path / "lines.7").unlink()
    with pytest.raises(SystemExit, match="expected 8 lines snapshots"):
        pn.collect_counts(tmp_path, "fastsocket", 2, stem="lines")


def test_bench_proxy_decomposition_variants_set_up_their_own_module_and_environment() -> None:
    bp = load("bench_proxy")
    variants = ("stock", "fastsocket-listen", "fastsocket-nosteer")
    script = bp.guest_script(Path("/k"), 2, 1, 1, variants)
    haproxy = [line for line in script.splitlines() if "haproxy -db" in line and "warmup" not in line]
    assert len(haproxy) == 3
    assert not any("LD_PRELOAD" in line for line in haproxy if "haproxy-stock-0" in line)
    listen = next(line for line in haproxy if "haproxy-fastsocket-listen-0" in line)
    assert "LD_PRELOAD=/k/libfsocket.so FSOCKET_RFD=0 haproxy" in listen
    assert "modprobe fastsocket rfd_steer=0" in script
    assert "ehash_partition" not in script  # only the variants asked for


def test_bench_proxy_warms_up_with_an_uncounted_stock_run_first() -> None:
    bp = load("bench_proxy")
    lines = bp.guest_script(Path("/k"), 2, 3, 1, ("stock", "fastsocket"), marker=Path("/m/fsmark")).splitlines()
    warm = next(i for i, line in enumerate(lines) if "haproxy-warmup.log" in line)
    run = next(i for i, line in enumerate(lines) if line.endswith("> /dev/null") and "wrk -t2 -c8 -d3s" in line)
    assert lines[warm - 1] == bp._UNLOAD and "LD_PRELOAD" not in lines[warm]
    assert warm < run < lines.index("/m/fsmark") and lines[run + 1] == "kill $HAP; wait $HAP || true"


def test_the_a_a_control_runs_exactly_as_stock_in_both_benchmarks() -> None:
    bn, bp = load("bench_nginx"), load("bench_proxy")
    script = bn.guest_script(Path("/k"), 2, 3, 2, net="veth", variants=("stock", bn.CONTROL))
    assert script.count("nginx -c /tmp/bench-nginx/nginx.conf -p") == 4 + 1  # 2 variants x 2 rounds, warm-up
    warm = script.index("> /dev/null\nkill $NGINX")
    assert warm < script.index("$OUT/") and "LD_PRELOAD" not in script[:warm]
    assert "LD_PRELOAD" not in script and "reuseport" not in script and "modprobe fastsocket" not in script
    assert "$OUT/stock-again-2-1.wrk" in script and "$OUT/stock-2-1.wrk" in script
    proxy = bp.guest_script(Path("/k"), 2, 1, 1, ("stock", bp.CONTROL, "fastsocket"))
    haproxy = [line for line in proxy.splitlines() if "haproxy -db" in line and "warmup" not in line]
    assert [("LD_PRELOAD" in line) for line in haproxy] == [False, False, True]


def test_bench_proxy_haproxy_global_lines_reach_every_variant() -> None:
    bp = load("bench_proxy")
    script = bp.guest_script(
        Path("/k"), 2, 1, 2, ("stock", "fastsocket"), haproxy_global=("tune.listener.multi-queue off",)
    )
    cfg = script.split("haproxy.cfg <<'CONF'\n", 1)[1].split("CONF", 1)[0]
    assert "    maxconn 20000\n    tune.listener.multi-queue off\ndefaults" in cfg
    assert script.count("haproxy -db -f /tmp/px/haproxy.cfg") == 5  # one config, every run and the warm-up
    plain = bp.guest_script(Path("/k"), 2, 1, 1, ("stock",))
    assert "    maxconn 20000\ndefaults" in plain


def test_bench_proxy_client_cpus_leave_haproxy_alone_on_its_cpus() -> None:
    bp = load("bench_proxy")
    script = bp.guest_script(Path("/k"), 2, 3, 1, ("stock", "fastsocket"), client_cpus=2)
    assert "bind 10.94.0.2:8094" in script and "worker_processes 2;" in script
    assert "ip netns exec pxS taskset -c 2-3 nginx" in script
    assert script.count("ip netns exec pxC taskset -c 0-1 ") == 5  # HAProxy and the probe per variant; warm-up
    assert "ip netns exec pxW taskset -c 2-3 wrk -t2 -c8 -d3s" in script
    for dev, mask in (("vpC", "3"), ("vwC", "3"), ("vpS", "c"), ("vwW", "c")):
        assert f"echo {mask} > /sys/class/net/{dev}/queues/rx-0/rps_cpus" in script
    shared = bp.guest_script(Path("/k"), 2, 3, 1, ("stock",))
    assert "pxW" not in shared and "taskset" not in shared and "bind 127.0.0.1:8094" in shared


def test_results_dirs_of_tools_started_in_the_same_second_differ(tmp_path, monkeypatch) -> None:
    gr = load("guestrun")
    monkeypatch.setattr(gr, "REPO", tmp_path)
    monkeypatch.setattr(gr.time, "strftime", lambda fmt: "20261202-070645")
    first, second, third = (gr.results_dir("nginx") for _ in range(3))
    assert first.name == "nginx-20261202-070645"
    assert second.name == "nginx-20261202-070645-2" and third.name == "nginx-20261202-070645-3"
    assert all(p.is_dir() and p.parent == tmp_path / "out" / "reports" for p in (first, second, third))


def test_bench_proxy_profile_records_every_wrk_run_and_reports_it(tmp_path: Path) -> None:
    bp = load("bench_proxy")
    script = bp.guest_script(Path("/k"), 2, 1, 2, ("stock", "fastsocket"), profile=20000)
    lines = script.splitlines()
    wrk = [line for line in lines if "Connection: close" in line and "8094" in line and "$OUT/" in line]
    assert len(wrk) == 4 and all(line.startswith("perf record -q -a -e cpu-clock -c 20000 ") for line in wrk)
    assert sum("perf report -i /tmp/perf.data" in line for line in lines) == 4
    assert "perf record" not in bp.guest_script(Path("/k"), 2, 1, 1, ("stock",))
    row = "    10.00%   {n}  {comm}  [kernel.kallsyms]  [k] {sym}\n"
    for v, n in (("stock", 30), ("fastsocket", 20)):
        (tmp_path / f"{v}-0.wrk").write_text("  100 requests in 1.00s, 1.00MB read\nRequests/sec:    100.00\n")
        (tmp_path / f"{v}-0.perf").write_text(
            row.format(n=n, comm="haproxy", sym="tcp_ack") + row.format(n=10, comm="swapper", sym="halt")
        )
    by_comm = bp.collect_profile(tmp_path, 1, ("stock", "fastsocket"), "comm")
    assert by_comm == {
        "stock": {"haproxy": 300.0, "swapper": 100.0},
        "fastsocket": {"haproxy": 200.0, "swapper": 100.0},
    }
    by_sym = bp.collect_profile(tmp_path, 1, ("stock", "fastsocket"), "sym")
    assert by_sym["fastsocket"]["haproxy tcp_ack"] == 200.0
    assert bp.collect_profile(tmp_path / "none", 1, ("stock",), "comm") == {}


def test_bench_proxy_count_puts_each_wrk_run_between_markers_and_reads_them(tmp_path: Path) -> None:
    bp, ic = load("bench_proxy"), load("insncount")
    variants = ("stock", "fastsocket")
    script = bp.guest_script(Path("/k"), 2, 3, 2, variants, client_cpus=2, marker=Path("/m/fsmark"))
    lines = script.splitlines()
    runs = [i for i, line in enumerate(lines) if " wrk -t2 -c8 -d3s" in line and "$OUT/" in line]
    order = bp.run_order(variants, 2)
    assert [lines[i].split("$OUT/")[1] for i in runs] == [f"{v}-{r}.wrk" for r, v in order]
    assert all(lines[i - 1] == lines[i + 1] == "/m/fsmark" for i in runs)
    assert script.count("/m/fsmark") == 2 * len(order) and "kptr_restrict" in script
    assert "/m/fsmark" not in bp.guest_script(Path("/k"), 2, 3, 2, variants)
    assert bp.collect_counts(tmp_path, 2, variants) == {}  # not counted
    for i, (r, v) in enumerate(order):
        (tmp_path / f"{v}-{r}.kallsyms").write_text(KALLSYMS)
        (tmp_path / f"{v}-{r}.maps").write_text("")
        (tmp_path / f"{v}-{r}.wrk").write_text(f"  {1000 * (i + 1)} requests in 3.00s, 1.00MB read\nRequests/sec: 1\n")
        per = 100 if v == "stock" else 90
        (tmp_path / f"insns.{2 * i}").write_bytes(ic.struct.pack("<QQ", 0xFFFFFFFF81002000, 10**9))
        (tmp_path / f"insns.{2 * i + 1}").write_bytes(ic.struct.pack("<QQ", 0xFFFFFFFF81002000, per * 1000 * (i + 1)))
    counts = bp.collect_counts(tmp_path, 2, variants)
    assert counts == {"stock": {"tcp_v4_rcv": 100.0}, "fastsocket": {"tcp_v4_rcv": 90.0}}
    (tmp_path / "insns.3").unlink()
    with pytest.raises(SystemExit, match="expected 8 insns snapshots"):
        bp.collect_counts(tmp_path, 2, variants)


def test_both_benchmarks_open_the_asked_connections_per_cpu() -> None:
    bn, bp = load("bench_nginx"), load("bench_proxy")
    assert "wrk -t2 -c32 -d1s" in bp.guest_script(Path("/k"), 2, 1, 1, ("stock",), client_cpus=2, per_cpu=16)
    assert "wrk -t2 -c8 -d1s" in bp.guest_script(Path("/k"), 2, 1, 1, ("stock",), client_cpus=2)
    nginx = bn.guest_script(Path("/k"), 2, 1, 1, "veth", 2, ("stock",), per_cpu=16)
    assert "wrk -t2 -c32 -d1s" in nginx


@pytest.mark.parametrize(
    ("tool", "argv"),
    [
        ("bench_proxy", ["--connections-per-cpu", "0"]),
        ("bench_proxy", ["--profile", "500", "--accel", "icount"]),
        ("bench_proxy", ["--profile", "20000", "--accel", "tcg"]),
        ("bench_proxy", ["--count", "--accel", "tcg"]),
        ("bench_proxy", ["--count", "--profile", "20000", "--accel", "icount"]),
        ("bench_proxy", ["--lines", "--accel", "icount"]),
        ("profile_nginx", ["--lines", "--method", "perf"]),
        ("profile_nginx", ["--client-cpus", "2", "--method", "perf"]),
        ("profile_nginx", ["--connections-per-cpu", "0"]),
        ("profile_nginx", ["--connections-per-cpu", "8", "--method", "perf"]),
        ("profile_nginx", ["--lines", "--cpus", "8", "--client-cpus", "8"]),
        ("bench_proxy", ["--count", "--lines", "--accel", "icount", "--cpus", "12", "--client-cpus", "4"]),
        ("bench_nginx", ["--connections-per-cpu", "1001"]),
    ],
)
def test_benchmarks_reject_bad_load_and_profile_options(tool, argv, monkeypatch, capsys) -> None:
    mod = load(tool)
    monkeypatch.setattr(sys, "argv", [tool, *argv])
    with pytest.raises(SystemExit) as exc:
        mod.main()
    assert exc.value.code == 2
    assert re.search(r"--(connections-per-cpu|profile|count|lines|client-cpus)", capsys.readouterr().err)

"""Guest-wide kernel event counters around a benchmark run, per connection.

The benchmarks take a snapshot of /proc/stat, /proc/softirqs,
/proc/interrupts and /proc/vmstat right before and right after each load run, in the guest.
The differences, divided by the requests the run completed, say where two
variants differ in kind of work (more context switches, more receive
softirqs, more IPIs, more page faults or page allocations) even where the clock (TCG, icount) cannot price it.
"""

from __future__ import annotations

import statistics

# A shell snippet for the guest script; {path} gets a file name.
SNAPSHOT = "cat /proc/stat /proc/softirqs /proc/interrupts /proc/vmstat > {path}"

# Rows summed over CPUs: softirqs by name, IPIs by their /proc/interrupts label.
SOFTIRQS = ("NET_RX", "NET_TX", "TIMER", "SCHED", "RCU")
IPIS = {"RES": "ipi_resched", "CAL": "ipi_call", "TLB": "ipi_tlb"}
# /proc/vmstat lines, reported under their own names; pgalloc_* zones are summed.
VMSTAT = ("pgfault", "pgfree")
REPORTED = (
    "ctxt",
    "NET_RX",
    "NET_TX",
    "TIMER",
    "SCHED",
    "RCU",
    "ipi_resched",
    "ipi_call",
    "pgfault",
    "pgalloc",
    "pgfree",
)


def _row_sum(fields: list[str]) -> int:
    total = 0
    for f in fields:
        if not f.isdigit():
            break
        total += int(f)
    return total


def parse_snapshot(text: str) -> dict[str, int]:
    """Counters from one SNAPSHOT: ctxt, softirqs by name, IPIs by kind, page events."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        label = fields[0].rstrip(":")
        if label == "ctxt" and len(fields) == 2 and fields[1].isdigit():
            counts["ctxt"] = int(fields[1])
        elif fields[0].endswith(":") and label in SOFTIRQS:
            counts[label] = _row_sum(fields[1:])
        elif fields[0].endswith(":") and label in IPIS:
            counts[IPIS[label]] = _row_sum(fields[1:])
        elif len(fields) == 2 and fields[1].isdigit() and label in VMSTAT:
            counts[label] = int(fields[1])
        elif len(fields) == 2 and fields[1].isdigit() and label.startswith("pgalloc_"):
            counts["pgalloc"] = counts.get("pgalloc", 0) + int(fields[1])
    return counts


def per_connection(before: str, after: str, connections: int) -> dict[str, float]:
    """(after - before) / connections for every counter both snapshots have."""
    if connections <= 0:
        raise ValueError("per_connection needs at least one connection")
    a, b = parse_snapshot(after), parse_snapshot(before)
    return {k: round((a[k] - b[k]) / connections, 3) for k in REPORTED if k in a and k in b}


def median_counters(runs: list[dict[str, float]]) -> dict[str, float]:
    """Per counter, the median over runs that have it."""
    keys = [k for k in REPORTED if any(k in r for r in runs)]
    return {k: statistics.median(r[k] for r in runs if k in r) for k in keys}


def format_table(rows: dict[str, dict[str, float]], indent: int = 0) -> str:
    """One line per variant: kernel events per connection, in REPORTED order."""
    keys = [k for k in REPORTED if any(k in r for r in rows.values())]
    pad = " " * indent
    width = max(12, *(len(name) + 1 for name in rows))
    out = [pad + f"{'events/conn':{width}}" + "".join(f"{k:>12}" for k in keys)]
    for name, row in rows.items():
        out.append(pad + f"{name:{width}}" + "".join(f"{row.get(k, float('nan')):>12.2f}" for k in keys))
    return "\n".join(out)

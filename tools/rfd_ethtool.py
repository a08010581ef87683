#!/usr/bin/env python3
"""Print the ethtool ntuple rules that steer RFD traffic in the NIC (Flow Director style).

    python3 tools/rfd_ethtool.py --dev eth0                # one rule per CPU, queue i -> CPU i
    python3 tools/rfd_ethtool.py --dev eth0 --queue 0=4 --queue 1=5 ...

With fastsocket's Receive Flow Deliver, an active connection's local port p
names its CPU: p & mask == cpu, mask = roundup_pow_of_two(nr_cpu_ids) - 1.
The replies to it therefore carry that CPU in their destination port, and a
NIC with masked ntuple filters can deliver them to the queue whose interrupt
that CPU serves, so even the first softirq runs there (fastsocket's software
steering, rfd_steer, then has nothing left to move). In ethtool's syntax
the bits set in a mask ("m") are ignored, so the rule for CPU c is
`dst-port c m (0xffff & ~mask)`. The rules also match passive connections
whose server port happens to have those low bits: give them lower priority
(higher `loc`) than rules for your listening ports, or keep listening ports'
traffic on RSS with explicit rules first. Many drivers (e.g. i40e) accept
only full masks: ethtool then refuses the rule, and software steering is
what remains. This tool only prints; review and run the lines yourself.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

FAMILIES = {"tcp4": ("tcp4",), "tcp6": ("tcp6",), "both": ("tcp4", "tcp6")}


@dataclass(frozen=True)
class Rule:
    family: str
    cpu: int
    queue: int
    loc: int

    def command(self, dev: str, mask: int) -> str:
        return (
            f"ethtool -N {dev} flow-type {self.family} dst-port {self.cpu} m 0x{0xFFFF & ~mask:04x}"
            f" action {self.queue} loc {self.loc}"
        )


def possible_cpus(text: str | None = None) -> int:
    """Number of possible CPU ids (nr_cpu_ids) from /sys/devices/system/cpu/possible."""
    if text is None:
        text = Path("/sys/devices/system/cpu/possible").read_text()
    last = text.strip().split(",")[-1].split("-")[-1]
    return int(last) + 1


def cpu_mask(nr_cpu_ids: int) -> int:
    return (1 << (nr_cpu_ids - 1).bit_length()) - 1 if nr_cpu_ids > 1 else 0


def parse_queue_map(items: list[str], nr_cpu_ids: int) -> dict[int, int]:
    """CPU=QUEUE pairs; every CPU not named gets the queue with its own number."""
    qmap = {c: c for c in range(nr_cpu_ids)}
    for item in items:
        m = re.fullmatch(r"(\d+)=(\d+)", item.strip())
        if not m:
            raise ValueError(f"--queue {item!r}: expected CPU=QUEUE, e.g. 3=7")
        cpu, queue = int(m.group(1)), int(m.group(2))
        if cpu >= nr_cpu_ids:
            raise ValueError(f"--queue {item!r}: CPU {cpu} does not exist (nr_cpu_ids is {nr_cpu_ids})")
        qmap[cpu] = queue
    return qmap


def rules(nr_cpu_ids: int, qmap: dict[int, int], family: str, loc_base: int) -> list[Rule]:
    out: list[Rule] = []
    loc = loc_base
    for fam in FAMILIES[family]:
        for cpu in range(nr_cpu_ids):
            out.append(Rule(fam, cpu, qmap[cpu], loc))
            loc += 1
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dev", required=True, help="network device, e.g. eth0")
    ap.add_argument("--cpus", type=int, help="nr_cpu_ids of the server (default: this machine's)")
    ap.add_argument("--queue", action="append", default=[], metavar="CPU=QUEUE", help="rx queue serving a CPU")
    ap.add_argument("--family", choices=sorted(FAMILIES), default="both")
    ap.add_argument("--loc-base", type=int, default=1000, help="first rule location (default 1000)")
    args = ap.parse_args(argv)
    if not re.fullmatch(r"[A-Za-z0-9_.:@-]{1,15}", args.dev):
        ap.error(f"--dev {args.dev!r} is not a network device name")
    nr = args.cpus if args.cpus is not None else possible_cpus()
    if nr < 1 or nr > 65536:
        ap.error("--cpus must be 1-65536")
    if args.loc_base < 0:
        ap.error("--loc-base must be >= 0")
    try:
        qmap = parse_queue_map(args.queue, nr)
    except ValueError as exc:
        ap.error(str(exc))
    mask = cpu_mask(nr)
    if mask == 0:
        print("# one CPU: every port names CPU 0, nothing to steer", file=sys.stderr)
        return 0
    print(f"# RFD steering for {args.dev}: nr_cpu_ids {nr}, port mask 0x{mask:x}; queue i's IRQ must be on CPU i")
    print(f"ethtool -K {args.dev} ntuple on")
    for rule in rules(nr, qmap, args.family, args.loc_base):
        print(rule.command(args.dev, mask))
    if os.isatty(1):
        print("# check with: ethtool -n " + args.dev, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

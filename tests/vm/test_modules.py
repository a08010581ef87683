"""Modules built with the kernel load and unload in the guest."""

from __future__ import annotations

from pathlib import Path

from tests.vm.guest import sh


def loaded(name: str) -> bool:
    return any(line.split()[0] == name for line in Path("/proc/modules").read_text().splitlines())


def test_fastsocket_module_loads_and_unloads() -> None:
    assert not loaded("fastsocket")
    sh("modprobe fastsocket")
    try:
        assert loaded("fastsocket")
        lines = Path("/proc/net/fastsocket").read_text().splitlines()
        assert lines[0].startswith("fastsocket ")
        # The defaults: manual local listeners, RFD ports for sockets that ask, steering once one
        # does (not yet), no partition.
        defaults = ("listen_spawn 1", "rfd_ports 1", "rfd_steer 2", "rfd_steering 0", "ehash_partition 0")
        for line in (*defaults, "rfd_cpu_mask 1"):
            assert line in lines, (line, lines)
        columns = (
            "cpu listen_local listen_global accept_local accept_empty spawned migrated"
            " port_scan port_fallback rx_active rx_passive"
        )
        header = lines.index(columns)
        rows = [line.split() for line in lines[header + 1 :]]
        assert [r[0] for r in rows] == ["cpu0", "cpu1"]
        assert all(len(r) == len(columns.split()) and all(v.isdigit() for v in r[1:]) for r in rows)
    finally:
        sh("modprobe -r fastsocket")
    assert not loaded("fastsocket")
    assert not Path("/proc/net/fastsocket").exists()


def test_modinfo_matches_running_kernel() -> None:
    import os

    info = sh("modinfo -F vermagic fastsocket").stdout.split()
    assert info[0] == os.uname().release


def test_loading_a_missing_module_fails_cleanly() -> None:
    res = sh("modprobe fastsock-no-such-module", check=False)
    assert res.returncode != 0
    assert "not found" in res.stderr

"""The built kernel boots and is the one out/ says it is."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

from fastsock import kconfig
from fastsock.paths import Layout
from tests.vm.guest import kernel_dir, manifest


def test_two_vcpus_online() -> None:
    assert os.cpu_count() == 2
    assert Path("/sys/devices/system/cpu/online").read_text().strip() == "0-1"


def test_running_kernel_is_the_built_one() -> None:
    assert os.uname().release == manifest()["kernel_release"]


def test_every_fragment_symbol_is_in_proc_config() -> None:
    running = kconfig.parse(gzip.decompress(Path("/proc/config.gz").read_bytes()).decode())
    m = manifest()
    profile = kconfig.get_profile(m["profile"])
    frags = profile.fragment_paths(Layout.default().config_fragments, m["arch"])
    requested = kconfig.merge_fragments(frags)
    assert requested, "no fragment symbols found"
    wrong = {n: (v, running.get(n, "n")) for n, v in requested.items() if running.get(n, "n") != v}
    assert not wrong, f"symbols not as requested (wanted, running): {wrong}"


def test_manifest_describes_the_build() -> None:
    m = manifest()
    assert m["source"]["version"].startswith("6.12.")
    assert [p["name"] for p in m["patches"]], "manifest lists no patches"
    assert len(m["config_hash"]) == 64
    assert (kernel_dir() / "libfsocket.so").is_file()

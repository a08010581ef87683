from __future__ import annotations

from pathlib import Path

import pytest

from fastsock import kconfig
from fastsock.errors import ConfigError
from tests.unit.conftest import make_tree

REPO = Path(__file__).resolve().parents[2]


def test_parse_and_last_assignment_wins(tmp_path) -> None:
    a = tmp_path / "a.config"
    b = tmp_path / "b.config"
    a.write_text('# comment\nCONFIG_A=y\nCONFIG_B=m\nCONFIG_S="x y"\n')
    b.write_text("# CONFIG_A is not set\nCONFIG_C=64\n")
    merged = kconfig.merge_fragments([a, b])
    assert merged == {"A": "n", "B": "m", "S": '"x y"', "C": "64"}


def test_parse_rejects_garbage_with_location(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"frag:2: not a config line"):
        kconfig.parse("CONFIG_A=y\nA=y\n", "frag")


def test_apply_replaces_and_appends() -> None:
    base = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=y\n"
    out = kconfig.parse(kconfig.apply_fragments(base, {"B": "y", "C": "n", "D": "m"}))
    assert out == {"A": "y", "B": "y", "C": "n", "D": "m"}


def test_check_catches_a_dropped_symbol_and_explains_it(tmp_path) -> None:
    tree = make_tree(tmp_path)
    index = kconfig.KconfigIndex(tree, "x86")
    requested = {"NET": "y", "INET": "y", "FAKE_FEATURE": "m", "OLD_GONE": "y", "OFF": "n", "FAKE_BOOL": "m"}
    final = {"NET": "y", "INET": "y"}  # what olddefconfig left
    bad = {m.name: m for m in kconfig.check(requested, final, index)}
    assert set(bad) == {"FAKE_FEATURE", "OLD_GONE", "FAKE_BOOL"}
    assert "it is a bool" in bad["FAKE_BOOL"].why
    assert "unmet: FAKE_HW=n" in bad["FAKE_FEATURE"].why
    assert "INET && FAKE_HW" in bad["FAKE_FEATURE"].why
    assert "no such symbol" in bad["OLD_GONE"].why
    text = kconfig.format_mismatches(list(bad.values()))
    assert "CONFIG_FAKE_FEATURE: requested m, got n" in text


def test_promptless_symbol_is_explained(tmp_path) -> None:
    index = kconfig.KconfigIndex(make_tree(tmp_path), "x86")
    assert "only a `select`" in index.explain("FAKE_HW", {})


def test_every_profile_has_its_fragments_and_they_parse() -> None:
    for name, profile in kconfig.PROFILES.items():
        paths = profile.fragment_paths(REPO / "kernel-config", "x86_64")
        merged = kconfig.merge_fragments(paths)
        assert merged.get("FASTSOCKET") == "m", name
        # arm64 has no arch fragment; it must still resolve.
        profile.fragment_paths(REPO / "kernel-config", "arm64")


def test_vm_profile_has_what_virtme_ng_needs() -> None:
    frag = kconfig.merge_fragments(kconfig.PROFILES["vm"].fragment_paths(REPO / "kernel-config", "x86_64"))
    for sym in (
        "VIRTIO_PCI",
        "NET_9P_VIRTIO",
        "9P_FS",
        "OVERLAY_FS",
        "VIRTIO_VSOCKETS",
        "VETH",
        "NET_NS",
        "RPS",
        "IKCONFIG_PROC",
        "ACPI",
        "SERIAL_8250_CONSOLE",
    ):
        assert frag.get(sym) == "y", sym


def test_unknown_profile() -> None:
    with pytest.raises(ConfigError, match="unknown profile"):
        kconfig.get_profile("fast")

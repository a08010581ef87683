from __future__ import annotations

import os

import pytest

from fastsock import artifacts, hostdeps
from fastsock.errors import HostError
from fastsock.runner import Runner


def test_manifest_round_trip(tmp_path) -> None:
    m = artifacts.Manifest(
        kernel_release="6.12.117-fastsock",
        arch="x86_64",
        profile="vm",
        source={"origin": "/x", "sha256": "a" * 64, "version": "6.12.117"},
        patches=[{"name": "0001-x.patch", "sha256": "b" * 64}],
        overlay_hash="c",
        tree_input_hash="d",
        config_hash="e",
        fragments_hash="f",
        libfsocket_hash="g",
        build_seconds=1.5,
        built_at=artifacts.now(),
        tools={"gcc": "gcc 12"},
    )
    m.write(tmp_path)
    assert artifacts.Manifest.read(tmp_path) == m
    assert artifacts.Manifest.read(tmp_path / "nowhere") is None


def test_stage_lays_out_boot_for_virtme(tmp_path) -> None:
    obj = tmp_path / "obj"
    (obj / "arch/x86/boot").mkdir(parents=True)
    (obj / "arch/x86/boot/bzImage").write_bytes(b"kernel")
    (obj / "System.map").write_text("map")
    (obj / ".config").write_text("CONFIG_X=y\n")
    out = tmp_path / "out"
    (out / "lib/modules/6.12.100-old").mkdir(parents=True)
    artifacts.stage(obj, out, "arch/x86/boot/bzImage", "6.12.117-fastsock")
    assert (out / "boot/vmlinuz-6.12.117-fastsock").read_bytes() == b"kernel"
    assert (out / ".config").read_text() == "CONFIG_X=y\n"
    assert not (out / "lib/modules/6.12.100-old").exists(), "stale modules of another release left behind"


def test_missing_host_package_names_the_apt_line(monkeypatch) -> None:
    need = hostdeps.Need("frobtool-pkg", "frobtool-not-installed", "testing")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(HostError) as exc:
        hostdeps.ensure((need,), Runner())
    assert "apt-get install -y frobtool-pkg" in str(exc.value)
    assert "frobtool-pkg (testing)" in str(exc.value)

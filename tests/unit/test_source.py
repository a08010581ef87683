from __future__ import annotations

import logging
from pathlib import Path

import pytest

from fastsock.errors import SourceError
from fastsock.source import BASE_BRANCH, Pin, SourceCache, tree_version
from tests.unit.conftest import git, make_tarball, make_tree


def test_tarball_is_unpacked_once_into_a_git_base(tmp_path, layout, pin, runner) -> None:
    tar = make_tarball(tmp_path)
    cache = SourceCache(layout.cache, runner)
    src = cache.resolve(pin, tar)
    assert src.version == "6.12.117"
    assert (src.repo / "Makefile").is_file()
    # The Debian-style .gitignore ignoring everything must not hide the tree from git.
    assert "net/Makefile" in git(src.repo, "ls-tree", "-r", "--name-only", BASE_BRANCH)
    tar_calls = [c for c in runner.calls if c[0] == "tar"]
    assert len(tar_calls) == 1
    again = cache.resolve(pin, tar)
    assert again == src
    assert len([c for c in runner.calls if c[0] == "tar"]) == 1, "re-run unpacked again"


def test_debian_tarball_is_the_default(tmp_path, layout, runner, caplog) -> None:
    tar = make_tarball(tmp_path)
    pin = Pin("6.12.117", "https://example.invalid/x.tar.xz", "", "", tar, debian_sha256="0" * 64)
    with caplog.at_level(logging.WARNING):
        src = SourceCache(layout.cache, runner).resolve(pin, None)
    assert src.origin == str(tar)
    assert len(src.sha256) == 64
    assert "not the tarball this series was verified on" in caplog.text
    caplog.clear()
    pinned = Pin("6.12.117", "https://example.invalid/x.tar.xz", "", "", tar, debian_sha256=src.sha256)
    with caplog.at_level(logging.WARNING):
        SourceCache(layout.cache, runner).resolve(pinned, None)
    assert "verified on" not in caplog.text


def test_no_source_and_no_download_names_the_package(layout, pin, runner) -> None:
    with pytest.raises(SourceError) as exc:
        SourceCache(layout.cache, runner).resolve(pin, None, allow_download=False)
    assert "linux-source-6.12" in str(exc.value)


def test_missing_explicit_source(layout, pin, runner, tmp_path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        SourceCache(layout.cache, runner).resolve(pin, tmp_path / "nope")


def test_other_series_is_rejected(tmp_path, layout, pin, runner) -> None:
    tar = make_tarball(tmp_path, patchlevel=6)
    with pytest.raises(SourceError, match=r"6\.6\.117"):
        SourceCache(layout.cache, runner).resolve(pin, tar)
    assert not list((layout.cache / "base").iterdir()), "a rejected source stayed in the cache"


def test_newer_sublevel_is_accepted_with_a_warning(tmp_path, layout, pin, runner, caplog) -> None:
    tar = make_tarball(tmp_path, sublevel=130)
    with caplog.at_level(logging.WARNING):
        src = SourceCache(layout.cache, runner).resolve(pin, tar)
    assert src.version == "6.12.130"
    assert "newer than the pin" in caplog.text


def test_directory_source(tmp_path, layout, pin, runner) -> None:
    tree = make_tree(tmp_path)
    src = SourceCache(layout.cache, runner).resolve(pin, tree)
    assert src.origin == str(tree.resolve())
    assert tree_version(src.repo) == "6.12.117"


def test_pin_validation(tmp_path) -> None:
    p = tmp_path / "pin.toml"
    p.write_text('version = "6.12"\nurl = "x"\n')
    with pytest.raises(SourceError, match="X\\.Y\\.Z"):
        Pin.load(p)
    p.write_text('version = "6.12.1"\nurl = "x"\nsha256 = "abc"\n')
    with pytest.raises(SourceError, match="64 hex"):
        Pin.load(p)
    p.write_text('version = "6.12.1"\nurl = "x"\ndebian_sha256 = "xyz"\n')
    with pytest.raises(SourceError, match="debian_sha256"):
        Pin.load(p)
    p.write_text("version = ")
    with pytest.raises(SourceError, match="cannot read"):
        Pin.load(p)


def test_repo_pin_is_valid() -> None:
    pin = Pin.load(Path(__file__).resolve().parents[2] / "linux-pin.toml")
    assert pin.series == (6, 12)

"""Overlay + series on a miniature kernel tree; refresh and export round trips."""

from __future__ import annotations

import pytest

from fastsock.errors import PatchError
from fastsock.source import SourceCache
from fastsock.tree import WorkTree, input_hash
from tests.unit.conftest import git, make_tarball

PATCH = """\
From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001
From: Dev <dev@example.invalid>
Date: Mon, 23 Nov 2026 00:00:00 +0000
Subject: [PATCH] net: build the fake directory

Signed-off-by: Dev <dev@example.invalid>
---
 net/Makefile | 1 +
 1 file changed, 1 insertion(+)

diff --git a/net/Makefile b/net/Makefile
--- a/net/Makefile
+++ b/net/Makefile
@@ -1,2 +1,3 @@
 obj-y += core/
 obj-$(CONFIG_INET) += ipv4/
+obj-$(CONFIG_FAKE) += fake/
"""


@pytest.fixture
def source(tmp_path, layout, pin, runner):
    return SourceCache(layout.cache, runner).resolve(pin, make_tarball(tmp_path))


@pytest.fixture
def wt(layout, runner) -> WorkTree:
    (layout.kernel_overlay / "net" / "fake").mkdir(parents=True)
    (layout.kernel_overlay / "net" / "fake" / "fake.c").write_text("int fake;\n")
    (layout.patches / "0001-net-build-the-fake-directory.patch").write_text(PATCH)
    (layout.patches / "series").write_text("# series\n0001-net-build-the-fake-directory.patch\n")
    return WorkTree(layout.worktree, layout.kernel_overlay, layout.patches, runner)


def test_overlay_then_series_one_commit_each(wt, source, layout) -> None:
    state = wt.prepare(source)
    assert (layout.worktree / "net" / "fake" / "fake.c").read_text() == "int fake;\n"
    assert "fake/" in (layout.worktree / "net" / "Makefile").read_text()
    log = git(layout.worktree, "log", "--format=%s", f"{state.base_sha}..HEAD").splitlines()
    assert log == ["net: build the fake directory", "net: fastsocket: add the new files"]
    assert state.input_hash == input_hash(layout.kernel_overlay, layout.patches)


def test_prepare_twice_is_a_no_op(wt, source, runner) -> None:
    first = wt.prepare(source)
    n = len(runner.calls)
    second = wt.prepare(source)
    assert second.head == first.head
    assert not any("am" in c for c in runner.calls[n:]), "re-applied an unchanged series"


def test_failing_patch_names_patch_and_file(wt, source, layout) -> None:
    bad = PATCH.replace(" obj-y += core/\n", " obj-y += kore/\n")
    (layout.patches / "0002-net-conflict.patch").write_text(bad.replace("build the fake", "conflict"))
    (layout.patches / "series").write_text("0001-net-build-the-fake-directory.patch\n0002-net-conflict.patch\n")
    with pytest.raises(PatchError) as exc:
        wt.prepare(source)
    msg = str(exc.value)
    assert "0002-net-conflict.patch" in msg and "net/Makefile" in msg
    # The tree stops just before the failing patch, so a developer can resolve it there.
    assert git(layout.worktree, "log", "-1", "--format=%s").strip() == "net: build the fake directory"


def test_refresh_is_idempotent_and_captures_edits(wt, source, layout) -> None:
    wt.prepare(source)
    first = wt.refresh()
    snapshot = {p: p.read_bytes() for p in layout.patches.iterdir()}
    assert wt.refresh() == [], "second refresh changed something"
    assert {p: p.read_bytes() for p in layout.patches.iterdir()} == snapshot
    assert set(first) <= {"patches/0001-net-build-the-fake-directory.patch"}
    # A developer edits an overlay file and adds a new hook commit in the work tree.
    (layout.worktree / "net" / "fake" / "fake.c").write_text("int fake = 1;\n")
    (layout.worktree / "net" / "Kconfig").write_text('source "net/ipv4/Kconfig"\nsource "net/fake/Kconfig"\n')
    (layout.worktree / "net" / "fake" / "Kconfig").write_text("config FAKE\n\tbool\n")
    git(layout.worktree, "add", "-f", "net/fake/Kconfig")
    git(
        layout.worktree,
        "commit",
        "-q",
        "-a",
        "-m",
        "net: source the fake Kconfig",
        "-m",
        "Signed-off-by: Dev <dev@example.invalid>",
    )
    changed = wt.refresh()
    assert "kernel/net/fake/fake.c" in changed and "kernel/net/fake/Kconfig" in changed
    assert (layout.kernel_overlay / "net" / "fake" / "fake.c").read_text() == "int fake = 1;\n"
    series = (layout.patches / "series").read_text().split()
    assert series[-2:] == ["0001-net-build-the-fake-directory.patch", "0002-net-source-the-fake-Kconfig.patch"]
    new_patch = (layout.patches / "0002-net-source-the-fake-Kconfig.patch").read_text()
    assert "net/fake/Kconfig" not in new_patch.split("\ndiff --git", 1)[1].split("\n")[0]
    assert '+source "net/fake/Kconfig"' in new_patch
    assert wt.refresh() == []
    # And the refreshed inputs rebuild the same tree from scratch.
    assert wt.prepare(source).input_hash == input_hash(layout.kernel_overlay, layout.patches)


def test_refresh_keeps_new_overlay_files_and_removes_deleted_ones(wt, source, layout) -> None:
    wt.prepare(source)
    # A file dropped into kernel/ after prepare is someone's new work: refresh keeps it.
    fresh = layout.kernel_overlay / "net" / "fake" / "new.c"
    fresh.write_text("int new_work;\n")
    assert "kernel/net/fake/new.c (removed)" not in wt.refresh()
    assert fresh.read_text() == "int new_work;\n"
    # A file a work-tree commit deleted goes away from kernel/ too.
    git(layout.worktree, "rm", "-q", "net/fake/fake.c")
    git(layout.worktree, "commit", "-q", "-m", "net: drop fake.c", "-m", "Signed-off-by: Dev <dev@example.invalid>")
    changed = wt.refresh()
    assert "kernel/net/fake/fake.c (removed)" in changed
    assert not (layout.kernel_overlay / "net" / "fake" / "fake.c").exists()
    assert fresh.exists()


def test_refresh_never_overwrites_newer_kernel_files(wt, source, layout) -> None:
    wt.prepare(source)
    # Someone edits kernel/ after prepare while the work tree also changes the file.
    theirs = layout.kernel_overlay / "net" / "fake" / "fake.c"
    theirs.write_text("int theirs = 2;\n")
    (layout.worktree / "net" / "fake" / "fake.c").write_text("int mine = 1;\n")
    git(layout.worktree, "commit", "-q", "-a", "-m", "net: mine", "-m", "Signed-off-by: Dev <dev@example.invalid>")
    assert "kernel/net/fake/fake.c" not in wt.refresh()
    assert theirs.read_text() == "int theirs = 2;\n"


def test_dirty_files_names_whole_paths(wt, source, layout) -> None:
    wt.prepare(source)
    (layout.worktree / "net" / "Makefile").write_text("changed\n")
    assert wt.dirty_files() == ["net/Makefile"]


def test_refresh_refuses_uncommitted_edits(wt, source, layout) -> None:
    wt.prepare(source)
    (layout.worktree / "net" / "Makefile").write_text("changed\n")
    with pytest.raises(PatchError, match="uncommitted"):
        wt.refresh()


def test_prepare_protects_local_work(wt, source, layout) -> None:
    wt.prepare(source)
    (layout.worktree / "net" / "Makefile").write_text("my edit\n")
    (layout.kernel_overlay / "net" / "fake" / "fake.c").write_text("int fake = 2;\n")
    with pytest.raises(PatchError, match="uncommitted edits"):
        wt.prepare(source)
    assert (layout.worktree / "net" / "Makefile").read_text() == "my edit\n"
    wt.prepare(source, force=True)
    assert "fake/" in (layout.worktree / "net" / "Makefile").read_text()


def test_export_writes_a_format_patch_series(wt, source, layout, tmp_path) -> None:
    wt.prepare(source)
    files = wt.export(tmp_path / "export")
    assert [f.name[:5] for f in files] == ["0001-", "0002-"]
    assert (tmp_path / "export" / "series").read_text().split() == [f.name for f in files]
    assert "new file mode" in files[0].read_text()
    # The export applies with git am to a pristine copy of the base.
    clone = tmp_path / "clone"
    git(source.repo, "worktree", "add", "-q", "--detach", str(clone), "fastsock-base")
    git(clone, "am", "-q", *map(str, files))
    assert (clone / "net" / "fake" / "fake.c").exists()

from __future__ import annotations

from pathlib import Path

from fastsock import series
from tests.unit.test_tree import PATCH

REPO = Path(__file__).resolve().parents[2]


def test_repo_series_is_clean() -> None:
    assert series.lint(REPO / "patches") == []
    assert series.read_series(REPO / "patches"), "the repo has no patches"


def test_lint_finds_each_problem(tmp_path) -> None:
    (tmp_path / "0001-net-good.patch").write_text(PATCH)
    (tmp_path / "0002-net-nosob.patch").write_text(PATCH.replace("Signed-off-by: Dev <dev@example.invalid>\n", ""))
    (tmp_path / "0003-net-nosubject.patch").write_text(PATCH.replace("Subject: ", "Topic: "))
    (tmp_path / "0004-net-unlisted.patch").write_text(PATCH)
    (tmp_path / "series").write_text(
        "# c\n0001-net-good.patch\n0002-net-nosob.patch\n0003-net-nosubject.patch\n0009-gone.patch\n"
        "0001-net-good.patch\n"
    )
    problems = "\n".join(series.lint(tmp_path))
    assert "0002-net-nosob.patch: no Signed-off-by" in problems
    assert "0003-net-nosubject.patch: no Subject" in problems
    assert "0009-gone.patch, which does not exist" in problems
    assert "0004-net-unlisted.patch is not listed" in problems
    assert "lists 0001-net-good.patch more than once" in problems
    assert "0001-net-good.patch:" not in problems


def test_slug() -> None:
    assert series.slug("[PATCH] net: wire things") == "net-wire-things"
    long = series.slug("net: " + "word " * 30)
    assert len(long) <= 52 and not long.endswith("-")

from __future__ import annotations

import pytest

from fastsock import cli


@pytest.mark.parametrize(
    ("argv", "want"),
    [
        ([], ["build"]),
        (["--arch", "x86_64"], ["build", "--arch", "x86_64"]),
        (["--arch", "x86_64", "test"], ["test", "--arch", "x86_64"]),
        (["--profile", "vm", "config"], ["config", "--profile", "vm"]),
        (["vm", "--", "uname", "-r"], ["vm", "--", "uname", "-r"]),
        (["-h"], ["-h"]),
    ],
)
def test_subcommand_goes_first(argv, want) -> None:
    assert cli._command_first(argv) == want


def test_unknown_arch_is_a_clear_error(capsys, caplog) -> None:
    assert cli.main(["lint", "--arch", "sparc"]) == 2
    assert "unknown architecture 'sparc'" in capsys.readouterr().err + caplog.text
    assert "arm64, x86_64" in caplog.text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["build", "--jobs", "0"], "must be at least 1"),
        (["build", "-j", "many"], "is not a whole number"),
        (["build", "--profile", "huge"], "invalid choice"),
        (["vm", "--memory", "lots"], "is not a size"),
        (["vm", "--accel", "hvf"], "invalid choice"),
        (["frobnicate"], "unrecognized arguments"),
    ],
)
def test_bad_flags_exit_2_with_a_message(argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_lint_on_the_repo_passes(capsys) -> None:
    assert cli.main(["lint"]) == 0
    assert "patch series OK" in capsys.readouterr().out


def test_test_passes_pytest_args() -> None:
    args = cli.parse_args(["test", "--unit-only", "--", "-k", "kconfig"])
    assert args.unit_only and args.pytest_args == ["-k", "kconfig"]

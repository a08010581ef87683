"""Typed failures. Each names the culprit and, where known, the fix."""

from __future__ import annotations


class FastsockError(Exception):
    """An expected failure: printed without a traceback, with a hint."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:
        msg = super().__str__()
        return f"{msg}\n  fix: {self.hint}" if self.hint else msg


class HostError(FastsockError):
    """A host tool or package is missing."""


class SourceError(FastsockError):
    """The kernel source could not be found, verified or unpacked."""


class PatchError(FastsockError):
    """A patch did not apply, or the series is malformed."""


class ConfigError(FastsockError):
    """A config fragment symbol did not take effect."""


class BuildError(FastsockError):
    """make failed."""


class VMError(FastsockError):
    """The guest did not boot or the runner failed."""

"""The one place that runs external commands, so tests can replace it."""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Result:
    """What a finished command returned."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    elapsed: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class Runner:
    """Runs commands. Subclass or replace in tests."""

    def run(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
        timeout: float | None = None,
        input_text: str | None = None,
    ) -> Result:
        """Run argv, capture its output, and return a Result."""
        args = tuple(str(a) for a in argv)
        log.debug("$ %s%s", shlex.join(args), f"  (in {cwd})" if cwd else "")
        start = time.monotonic()
        try:
            proc = subprocess.run(
                args,
                cwd=cwd,
                env=self._env(env),
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
                input=input_text,
                stdin=None if input_text is not None else subprocess.DEVNULL,
                check=False,
            )
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"command not found: {args[0]}") from exc
        res = Result(args, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start)
        if check and not res.ok:
            raise subprocess.CalledProcessError(res.returncode, args, res.stdout, res.stderr)
        return res

    def stream(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        logfile: Path,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        on_line: Callable[[str], None] | None = None,
        timeout: float | None = None,
    ) -> int:
        """Run argv with stdout+stderr teed to logfile and each line given to on_line.

        Returns the exit code; a timeout kills the process group and returns 124.
        """
        args = [str(a) for a in argv]
        log.info("$ %s", shlex.join(args))
        logfile.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout if timeout else None
        with open(logfile, "w", encoding="utf-8") as out:
            out.write(f"$ {shlex.join(args)}\n")
            proc = subprocess.Popen(
                args,
                cwd=cwd,
                env=self._env(env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                start_new_session=True,
            )
            assert proc.stdout is not None
            for line in proc.stdout:
                out.write(line)
                if on_line:
                    on_line(line.rstrip("\n"))
                if deadline and time.monotonic() > deadline:
                    os.killpg(proc.pid, 9)
                    proc.wait()
                    out.write("\n*** timed out ***\n")
                    return 124
            return proc.wait()

    @staticmethod
    def _env(extra: Mapping[str, str] | None) -> dict[str, str] | None:
        if extra is None:
            return None
        env = dict(os.environ)
        env.update(extra)
        return env


def is_tty() -> bool:
    return sys.stderr.isatty()

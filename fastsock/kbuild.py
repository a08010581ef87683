"""Drive kbuild: resolve a profile's config, build, install modules, name the culprit on failure."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import kconfig
from .arch import Arch
from .errors import BuildError, ConfigError, HostError
from .runner import Runner

log = logging.getLogger(__name__)

STEP_RE = re.compile(r"^\s{2}([A-Z][A-Z0-9_]{1,9})\s+(\S+)")
ERROR_RE = re.compile(
    r"^(?P<file>[^\s:]+\.(?:c|h|S|rs|lds|config)):(?P<line>\d+):(?:\d+:)? (?:fatal )?error: (?P<msg>.*)"
)
MAKE_ERR_RE = re.compile(r"make\[\d+\]: \*\*\* \[(?P<mk>[^\]:]+):\d+: (?P<target>[^\]]+)\] Error")


@dataclass(frozen=True)
class BuildRequest:
    arch: Arch
    profile: kconfig.Profile
    srctree: Path
    objdir: Path
    fragment_dir: Path
    jobs: int
    logfile: Path
    use_ccache: bool = True


class Progress:
    """One status line: steps done (of the last build's count), current step, elapsed."""

    def __init__(self, label: str, expected: int | None) -> None:
        self.label = label
        self.expected = expected
        self.steps = 0
        self.last = ""
        self.start = time.monotonic()
        self.next_print = self.start
        self.tty = sys.stderr.isatty()

    def line(self, text: str) -> None:
        m = STEP_RE.match(text)
        if not m:
            return
        self.steps += 1
        self.last = f"{m.group(1)} {m.group(2)}"
        now = time.monotonic()
        if now >= self.next_print:
            self.next_print = now + (0.5 if self.tty else 30)
            self.show()

    def show(self, final: bool = False) -> None:
        el = time.monotonic() - self.start
        pct = f" ~{min(99, 100 * self.steps // self.expected)}%" if self.expected and not final else ""
        msg = f"[{self.label}] {self.steps} steps{pct}, {int(el) // 60}m{int(el) % 60:02d}s  {self.last}"
        if self.tty:
            sys.stderr.write("\r\033[K" + msg[:150] + ("\n" if final else ""))
        else:
            sys.stderr.write(msg + "\n")
        sys.stderr.flush()


class KBuild:
    def __init__(self, req: BuildRequest, runner: Runner) -> None:
        self.req = req
        self.runner = runner

    def make_args(self, *targets: str) -> list[str]:
        r = self.req
        # LOCALVERSION= (empty): no "+" suffix for the git work tree; the fragment sets -fastsock.
        args = ["make", "-C", str(r.srctree), f"O={r.objdir}", f"ARCH={r.arch.kernel_arch}", "LOCALVERSION="]
        cross = r.arch.cross_compile()
        if cross:
            if not shutil.which(f"{cross}gcc"):
                raise HostError(
                    f"cross compiler {cross}gcc not found for --arch {r.arch.name}",
                    hint=f"apt-get install {r.arch.cross_package}",
                )
            args.append(f"CROSS_COMPILE={cross}")
        if r.use_ccache and shutil.which("ccache"):
            args.append(f"CC=ccache {cross or ''}gcc")
        return [*args, *targets]

    def env(self) -> dict[str, str]:
        return {
            "KBUILD_BUILD_USER": "fastsock",
            "KBUILD_BUILD_HOST": "fastsock",
            # Relative paths in ccache's hash, so another clone hits the same cache.
            "CCACHE_BASEDIR": str(self.req.srctree.parent.parent),
            "CCACHE_NOHASHDIR": "1",
        }

    # -- config ------------------------------------------------------------

    def configure(self) -> tuple[dict[str, str], str]:
        """Write objdir/.config for the profile (only if it changed); check every symbol.

        Returns the requested symbols and the config's hash.
        """
        r = self.req
        r.objdir.mkdir(parents=True, exist_ok=True)
        frags = r.profile.fragment_paths(r.fragment_dir, r.arch.name)
        requested = kconfig.merge_fragments(frags)
        base_target = "tinyconfig" if r.profile.base == "tinyconfig" else r.arch.defconfig
        tmp_name = ".config.fastsock-new"
        tmp = r.objdir / tmp_name
        env = {**self.env(), "KCONFIG_CONFIG": tmp_name}
        log.info("config: %s + %s", base_target, ", ".join(p.name for p in frags))
        self._make_quiet([base_target], env, "base config")
        tmp.write_text(kconfig.apply_fragments(tmp.read_text(), requested))
        self._make_quiet(["olddefconfig"], env, "olddefconfig")
        final = kconfig.parse(tmp.read_text())
        bad = kconfig.check(requested, final, None)
        if bad:
            index = kconfig.KconfigIndex(r.srctree, _srcarch(r.arch))
            bad = kconfig.check(requested, final, index)
            raise ConfigError(
                f"{len(bad)} config symbol(s) of profile {r.profile.name} did not take effect:\n  "
                + kconfig.format_mismatches(bad),
                hint="fix the fragment in kernel-config/ (enable the unmet dependency, or drop the symbol)",
            )
        dest = r.objdir / ".config"
        if dest.exists() and dest.read_bytes() == tmp.read_bytes():
            tmp.unlink()
            log.info("config unchanged (%d symbols requested, all set)", len(requested))
        else:
            os.replace(tmp, dest)
            log.info("config written: %d symbols requested, all set", len(requested))
        for old in r.objdir.glob(f"{tmp_name}*"):
            old.unlink()
        return requested, hashlib.sha256(dest.read_bytes()).hexdigest()

    def _make_quiet(self, targets: list[str], env: dict[str, str], what: str) -> None:
        res = self.runner.run(self.make_args(*targets), env=env, check=False)
        if not res.ok:
            tail = "\n".join((res.stdout + res.stderr).splitlines()[-20:])
            raise ConfigError(f"{what} failed (make {' '.join(targets)}):\n{tail}")

    # -- build -------------------------------------------------------------

    def kernelrelease(self) -> str:
        return self.runner.run(self.make_args("-s", "kernelrelease"), env=self.env()).stdout.strip()

    def build(self, extra_targets: tuple[str, ...] = ()) -> float:
        r = self.req
        image_target = Path(r.arch.image).name
        stats = r.objdir / ".fastsock-steps.json"
        expected = None
        if stats.is_file():
            expected = json.loads(stats.read_text()).get("steps") or None
        progress = Progress(f"build {r.arch.name}/{r.profile.name}", expected)
        start = time.monotonic()
        rc = self.runner.stream(
            self.make_args(f"-j{r.jobs}", image_target, "modules", *extra_targets),
            logfile=r.logfile,
            env=self.env(),
            on_line=progress.line,
        )
        progress.show(final=True)
        elapsed = time.monotonic() - start
        if rc != 0:
            raise BuildError(self.diagnose(r.logfile), hint=f"full log: {r.logfile}")
        if progress.steps > (expected or 0):  # the largest build seen: a full one
            stats.write_text(json.dumps({"steps": progress.steps}))
        return elapsed

    def install_modules(self, dest: Path) -> None:
        res = self.runner.run(
            self.make_args("modules_install", f"INSTALL_MOD_PATH={dest}", "INSTALL_MOD_STRIP=1"),
            env=self.env(),
            check=False,
        )
        if not res.ok:
            raise BuildError(
                f"modules_install failed:\n{(res.stdout + res.stderr)[-2000:]}", hint="is kmod (depmod) installed?"
            )

    def bindeb(self, logfile: Path) -> list[Path]:
        r = self.req
        rc = self.runner.stream(self.make_args(f"-j{r.jobs}", "bindeb-pkg"), logfile=logfile, env=self.env())
        if rc != 0:
            raise BuildError(self.diagnose(logfile), hint=f"full log: {logfile}; needs dpkg-dev and rsync")
        return sorted(r.objdir.parent.glob("*.deb"))

    @staticmethod
    def diagnose(logfile: Path) -> str:
        """The failing file and the log's tail."""
        lines = logfile.read_text(errors="replace").splitlines()
        culprit = None
        for line in lines:
            if m := ERROR_RE.match(line):
                culprit = f"{m.group('file')}:{m.group('line')}: {m.group('msg')}"
                break
        if culprit is None:
            for line in lines:
                if re.match(r"^[\w.-]+: error: ", line):  # a tool's own error, e.g. dpkg-checkbuilddeps
                    culprit = line.strip()
                    break
        if culprit is None:
            for line in lines:
                if m := MAKE_ERR_RE.search(line):
                    culprit = f"make target {m.group('target')} (in {m.group('mk')})"
                    break
        tail = "\n    ".join(lines[-25:])
        return f"kernel build failed at {culprit or 'an unknown step'}\n  log tail:\n    {tail}"


def _srcarch(arch: Arch) -> str:
    return "x86" if arch.kernel_arch in ("x86_64", "i386") else arch.kernel_arch

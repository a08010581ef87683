"""Command line: build (default), test, prepare, config, refresh, export, lint, vm."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import artifacts, hostdeps, kconfig, series
from .arch import Arch, get_arch
from .errors import FastsockError
from .kbuild import BuildRequest, KBuild
from .paths import Layout
from .runner import Runner
from .source import Pin, Source, SourceCache
from .tree import WorkTree, input_hash
from .vm import VMRequest, VMRunner, dmesg_problems

log = logging.getLogger("fastsock")

COMMANDS = ("build", "test", "prepare", "config", "refresh", "export", "lint", "vm")


@dataclass
class Context:
    layout: Layout
    runner: Runner
    args: argparse.Namespace

    @property
    def arch(self) -> Arch:
        return get_arch(self.args.arch)

    @property
    def profile(self) -> kconfig.Profile:
        return kconfig.get_profile(self.args.profile)

    def source(self) -> Source:
        pin = Pin.load(self.layout.pin_file)
        return SourceCache(self.layout.cache, self.runner).resolve(pin, self.args.source)

    def worktree(self) -> WorkTree:
        lay = self.layout
        return WorkTree(lay.worktree, lay.kernel_overlay, lay.patches, self.runner)

    def kbuild(self) -> KBuild:
        lay = self.layout
        out = lay.outdir(self.arch.name, self.profile.name)
        req = BuildRequest(
            arch=self.arch,
            profile=self.profile,
            srctree=lay.worktree,
            objdir=lay.objdir(self.arch.name, self.profile.name),
            fragment_dir=lay.config_fragments,
            jobs=self.args.jobs,
            logfile=out / "build.log",
            use_ccache=not self.args.no_ccache,
        )
        return KBuild(req, self.runner)


# -- subcommands -------------------------------------------------------------


def cmd_prepare(ctx: Context) -> int:
    hostdeps.ensure(hostdeps.BUILD_NEEDS, ctx.runner)
    state = ctx.worktree().prepare(ctx.source(), force=ctx.args.force)
    log.info("work tree ready: %s (HEAD %s)", ctx.layout.worktree, state.head[:12])
    return 0


def cmd_config(ctx: Context) -> int:
    cmd_prepare(ctx)
    kb = ctx.kbuild()
    requested, _ = kb.configure()
    log.info("%s: %d requested symbols all took effect -> %s/.config", ctx.profile.name, len(requested), kb.req.objdir)
    return 0


def build_all(ctx: Context) -> artifacts.Manifest:
    start = time.monotonic()
    hostdeps.ensure(hostdeps.BUILD_NEEDS + (hostdeps.DEB_NEEDS if ctx.args.deb else ()), ctx.runner)
    source = ctx.source()
    lay = ctx.layout
    ctx.worktree().prepare(source, force=ctx.args.force)
    kb = ctx.kbuild()
    _, config_hash = kb.configure()
    out = lay.outdir(ctx.arch.name, ctx.profile.name)
    out.mkdir(parents=True, exist_ok=True)
    kb.build()
    kver = kb.kernelrelease()
    artifacts.stage(kb.req.objdir, out, ctx.arch.image, kver)
    kb.install_modules(out)
    lib = artifacts.build_libfsocket(
        lay.libfsocket, out, ctx.runner, ctx.arch.cross_compile(), out / "libfsocket-build.log"
    )
    if ctx.args.deb:
        debs = kb.bindeb(out / "deb-build.log")
        (out / "deb").mkdir(exist_ok=True)
        for deb in debs:
            os.replace(deb, out / "deb" / deb.name)
        log.info("Debian packages: %s", ", ".join(d.name for d in debs) or "none")
    frags = ctx.profile.fragment_paths(lay.config_fragments, ctx.arch.name)
    manifest = artifacts.Manifest(
        kernel_release=kver,
        arch=ctx.arch.name,
        profile=ctx.profile.name,
        source=source.to_json(),
        patches=artifacts.patch_list(lay.patches),
        overlay_hash=artifacts.dir_hash(lay.kernel_overlay),
        tree_input_hash=input_hash(lay.kernel_overlay, lay.patches),
        config_hash=config_hash,
        fragments_hash=kconfig.fragments_hash(frags, ctx.profile.base),
        libfsocket_hash=artifacts.dir_hash(lay.libfsocket),
        build_seconds=round(time.monotonic() - start, 1),
        built_at=artifacts.now(),
        tools=artifacts.tool_versions(ctx.runner),
    )
    manifest.write(out)
    log.info("built %s in %.0f s: %s (%s)", kver, manifest.build_seconds, out, lib.name)
    return manifest


def cmd_build(ctx: Context) -> int:
    build_all(ctx)
    return 0


def stale_reason(ctx: Context) -> str | None:
    """Why the out/ kernel does not match the repo, or None when it does."""
    lay = ctx.layout
    out = lay.outdir(ctx.arch.name, ctx.profile.name)
    m = artifacts.Manifest.read(out)
    if m is None or not list((out / "boot").glob("vmlinuz-*")):
        return f"no build in {out}"
    if m.tree_input_hash != input_hash(lay.kernel_overlay, lay.patches):
        return "kernel/ or patches/ changed"
    frags = ctx.profile.fragment_paths(lay.config_fragments, ctx.arch.name)
    if m.fragments_hash != kconfig.fragments_hash(frags, ctx.profile.base):
        return "kernel-config/ changed"
    if m.libfsocket_hash != artifacts.dir_hash(lay.libfsocket):
        return "libfsocket/ changed"
    return None


def cmd_test(ctx: Context) -> int:
    hostdeps.ensure(hostdeps.BUILD_NEEDS + hostdeps.VM_NEEDS + hostdeps.SERVER_NEEDS, ctx.runner)
    lay = ctx.layout
    reason = stale_reason(ctx)
    if reason and not ctx.args.unit_only:
        log.info("building the %s kernel first: %s", ctx.profile.name, reason)
        build_all(ctx)
    paths = ["tests/unit"] if ctx.args.unit_only else ["tests/unit", "tests/vm"]
    env = dict(os.environ, FASTSOCK_KERNEL_DIR=str(lay.outdir(ctx.arch.name, ctx.profile.name)))
    argv = [sys.executable, "-m", "pytest", *paths, *ctx.args.pytest_args]
    log.info("$ %s", " ".join(argv))
    return subprocess.call(argv, cwd=lay.repo, env=env, stdin=subprocess.DEVNULL)


def cmd_refresh(ctx: Context) -> int:
    changed = ctx.worktree().refresh()
    for path in changed:
        log.info("updated %s", path)
    if not changed:
        log.info("refresh: kernel/ and patches/ already match the work tree")
    problems = series.lint(ctx.layout.patches)
    for p in problems:
        log.error("lint: %s", p)
    return 1 if problems else 0


def cmd_export(ctx: Context) -> int:
    cmd_prepare(ctx)
    dest = ctx.layout.out / "export"
    files = ctx.worktree().export(dest)
    log.info("wrote %d patches to %s (apply with: git am %s/*.patch)", len(files), dest, dest)
    if ctx.args.checkpatch:
        script = ctx.layout.worktree / "scripts" / "checkpatch.pl"
        res = ctx.runner.run(["perl", script, "--strict", "--no-tree", *files], check=False)
        sys.stdout.write(res.stdout)
        return 0 if res.ok else 1
    return 0


def cmd_lint(ctx: Context) -> int:
    problems = series.lint(ctx.layout.patches)
    for p in problems:
        print(f"lint: {p}")
    if not problems:
        print(f"patch series OK: {len(series.read_series(ctx.layout.patches))} patches")
    return 1 if problems else 0


def cmd_vm(ctx: Context) -> int:
    hostdeps.ensure(hostdeps.VM_NEEDS, ctx.runner)
    vm = VMRunner(ctx.runner, ctx.layout.cache)
    req = VMRequest(
        kernel_dir=ctx.layout.outdir(ctx.arch.name, ctx.profile.name),
        command=" ".join(ctx.args.guest_command) or "uname -a",
        cpus=ctx.args.cpus,
        memory=ctx.args.memory,
        timeout=ctx.args.timeout,
        accel=ctx.args.accel,
        cwd=Path.cwd(),
    )
    res = vm.run(req)
    sys.stdout.write(res.stdout)
    sys.stderr.write(res.stderr if res.returncode else "")
    if ctx.args.dmesg:
        Path(ctx.args.dmesg).write_text(res.dmesg)
    bad = dmesg_problems(res.dmesg)
    if bad:
        log.warning("guest dmesg reports problems:\n  %s", "\n  ".join(bad[:20]))
    log.info("guest exited %d after %.1f s (%s)", res.returncode, res.elapsed, res.accel)
    return res.returncode


# -- argument parsing -----------------------------------------------------------


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def memory_size(text: str) -> str:
    import re

    if not re.fullmatch(r"[1-9]\d*[MG]", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 512M or 2G")
    return text


def make_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--arch", default="x86_64", help="x86_64 (default) or arm64 (cross)")
    common.add_argument(
        "--profile", default="vm", choices=sorted(kconfig.PROFILES), help="config profile (default: vm)"
    )
    common.add_argument("--source", type=Path, help="kernel source directory or tarball")
    common.add_argument("-j", "--jobs", type=positive_int, default=(os.cpu_count() or 1) + 1)
    common.add_argument(
        "--force", action="store_true", help="discard uncommitted edits in the work tree when re-applying"
    )
    common.add_argument("--no-ccache", action="store_true", help="build without ccache")
    common.add_argument("--deb", action="store_true", help="also build Debian packages (bindeb-pkg)")
    common.add_argument("-v", "--verbose", action="store_true", help="show every command")
    common.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")

    parser = argparse.ArgumentParser(
        prog="build.py",
        parents=[common],
        description="Build the fastsock kernel, modules and libfsocket; run the tests.",
        epilog="Without a subcommand, `build` runs.",
    )
    sub = parser.add_subparsers(dest="subcommand", metavar="COMMAND")
    sub.add_parser("build", parents=[common], help="build kernel, modules, libfsocket into out/")
    p = sub.add_parser("test", parents=[common], help="unit tests, then the VM tests (builds first if stale)")
    p.add_argument("--unit-only", action="store_true", help="only tests/unit (no kernel needed)")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER, help="passed to pytest (after --)")
    sub.add_parser("prepare", parents=[common], help="lay kernel/ over the source and apply patches/")
    sub.add_parser("config", parents=[common], help="resolve and check the profile's .config")
    sub.add_parser("refresh", parents=[common], help="write work-tree commits back to kernel/ and patches/")
    p = sub.add_parser("export", parents=[common], help="write the whole change as a format-patch series")
    p.add_argument("--checkpatch", action="store_true", help="run checkpatch.pl --strict on it")
    sub.add_parser("lint", parents=[common], help="check patches/series and patch headers")
    p = sub.add_parser("vm", parents=[common], help="boot the built kernel and run a command")
    p.add_argument("--cpus", type=positive_int, default=2)
    p.add_argument("--memory", type=memory_size, default="2G")
    p.add_argument("--timeout", type=positive_int, default=900, help="seconds")
    p.add_argument(
        "--accel",
        choices=("auto", "kvm", "tcg", "icount"),
        default="auto",
        help="icount: TCG with the guest clock counting instructions (repeatable rates)",
    )
    p.add_argument("--dmesg", help="save the guest's dmesg here")
    p.add_argument("guest_command", nargs=argparse.REMAINDER, help="command to run in the guest")
    return parser


HANDLERS = {
    "build": cmd_build,
    "test": cmd_test,
    "prepare": cmd_prepare,
    "config": cmd_config,
    "refresh": cmd_refresh,
    "export": cmd_export,
    "lint": cmd_lint,
    "vm": cmd_vm,
}


VALUE_OPTS = {"--arch", "--profile", "--source", "-j", "--jobs"}


def _command_first(argv: list[str]) -> list[str]:
    """Move the subcommand to the front (`--arch x86_64 test` == `test --arch x86_64`);
    no subcommand means `build`."""
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok == "--":
            break
        if tok in VALUE_OPTS:
            i += 2
            continue
        if not tok.startswith("-"):
            if tok in COMMANDS:
                return [tok, *argv[:i], *argv[i + 1 :]]
            break
        i += 1
    if any(a in ("-h", "--help") for a in argv[:1]):
        return argv
    return ["build", *argv]


def parse_args(argv: list[str]) -> argparse.Namespace:
    argv = _command_first(argv)
    args = make_parser().parse_args(argv)
    if getattr(args, "pytest_args", None) and args.pytest_args[0] == "--":
        args.pytest_args = args.pytest_args[1:]
    if getattr(args, "guest_command", None) and args.guest_command[:1] == ["--"]:
        args.guest_command = args.guest_command[1:]
    return args


def setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="[%(name)s] %(message)s", stream=sys.stderr)


def main(argv: list[str], layout: Layout | None = None, runner: Runner | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    cmd = args.subcommand or "build"
    ctx = Context(layout or Layout.default(), runner or Runner(), args)
    try:
        get_arch(args.arch)
        return HANDLERS[cmd](ctx)
    except FastsockError as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130

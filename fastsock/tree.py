"""The patched work tree: kernel/ laid over the base, then patches/series as one commit each.

The work tree is a git clone of the cached pristine source (build/linux), so a
developer can edit and commit there; `refresh` writes those commits back into
kernel/ and patches/, and `export` writes the whole change as a format-patch
series.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from . import series as series_mod
from .errors import PatchError
from .runner import Runner
from .source import BASE_BRANCH, GIT_IDENTITY, Source

log = logging.getLogger(__name__)

OVERLAY_SUBJECT = "net: fastsocket: add the new files"
OVERLAY_MESSAGE = f"""{OVERLAY_SUBJECT}

Add the files fastsock keeps in kernel/ at their in-tree paths: the
fastsocket module and its built-in hooks, and their headers. The patches
that follow wire them into the existing code.

Signed-off-by: fastsock developers <dev@fastsock.invalid>
"""
STATE_FILE = "fastsock-state.json"
FORMAT_OPTS = ["--zero-commit", "--no-signature", "--no-numbered", "--stat=80", "--summary"]


def overlay_files(overlay: Path) -> list[Path]:
    """Files of kernel/, relative to it, sorted."""
    if not overlay.is_dir():
        return []
    return sorted(p.relative_to(overlay) for p in overlay.rglob("*") if p.is_file())


def input_hash(overlay: Path, patch_dir: Path) -> str:
    """A hash of everything that decides the work tree's content."""
    h = hashlib.sha256()
    for rel in overlay_files(overlay):
        h.update(f"overlay {rel}\n".encode())
        h.update((overlay / rel).read_bytes())
    for p in series_mod.read_series(patch_dir):
        h.update(f"patch {p.name}\n".encode())
        h.update(p.path.read_bytes() if p.path.is_file() else b"<missing>")
    return h.hexdigest()


@dataclass
class TreeState:
    base_sha: str
    input_hash: str
    head: str
    patches: dict[str, str] = field(default_factory=dict)  # commit sha -> patch name
    overlay_commit: str | None = None
    # kernel/ file -> sha256 of what prepare laid over the tree: refresh never
    # overwrites a kernel/ file that changed since (someone's newer work).
    overlay_hashes: dict[str, str] = field(default_factory=dict)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class WorkTree:
    def __init__(self, path: Path, overlay: Path, patch_dir: Path, runner: Runner) -> None:
        self.path = path
        self.overlay = overlay
        self.patch_dir = patch_dir
        self.runner = runner

    # -- git helpers -----------------------------------------------------

    def git(self, *args: str, check: bool = True) -> str:
        res = self.runner.run(["git", "-C", self.path, *args], env=GIT_IDENTITY, check=check)
        return res.stdout.strip()

    def _state_path(self) -> Path:
        return self.path / ".git" / STATE_FILE

    def load_state(self) -> TreeState | None:
        try:
            return TreeState(**json.loads(self._state_path().read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def _save_state(self, state: TreeState) -> None:
        self._state_path().write_text(json.dumps(state.__dict__, indent=1))

    def dirty_files(self) -> list[str]:
        out = self.git("status", "--porcelain", "--untracked-files=no")
        # line[2:].lstrip(): the output may come stripped, eating the first line's leading blank.
        return [line[2:].lstrip() for line in out.splitlines() if line.strip()]

    # -- prepare ---------------------------------------------------------

    def prepare(self, source: Source, force: bool = False) -> TreeState:
        """Bring the work tree to base + overlay + series; skip if already there."""
        patches = series_mod.check(self.patch_dir)
        want = input_hash(self.overlay, self.patch_dir)
        base_sha = self.runner.run(["git", "-C", source.repo, "rev-parse", BASE_BRANCH]).stdout.strip()
        state = self.load_state() if (self.path / ".git").is_dir() else None

        if state is not None and state.base_sha != base_sha:
            log.info("kernel source changed: recreating the work tree %s", self.path)
            self._guard_local_work(state, force)
            shutil.rmtree(self.path)
            state = None
        if state is None:
            if self.path.exists():
                shutil.rmtree(self.path)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            log.info("creating the work tree %s (git clone --shared, ~20 s)", self.path)
            self.runner.run(["git", "clone", "-q", "--shared", "-b", BASE_BRANCH, source.repo, self.path])
        else:
            if state.input_hash == want and self.git("rev-parse", "HEAD") == state.head:
                if not self.dirty_files():
                    log.info("work tree up to date (%d patches)", len(patches))
                    return state
                log.info("work tree has uncommitted edits; building them as they are")
                return state
            self._guard_local_work(state, force)

        return self._apply(base_sha, patches, want)

    def _guard_local_work(self, state: TreeState, force: bool) -> None:
        """Refuse to throw away edits or commits a developer made in the work tree."""
        if force:
            return
        dirty = self.dirty_files()
        if dirty:
            raise PatchError(
                f"the work tree {self.path} has uncommitted edits ({', '.join(dirty[:5])}) "
                "and kernel/ or patches/ changed",
                hint="commit them there and run `build.py refresh`, or pass --force to discard",
            )
        head = self.git("rev-parse", "HEAD")
        if head != state.head:
            raise PatchError(
                f"the work tree {self.path} has commits that are not in patches/ yet",
                hint="run `build.py refresh` to save them, or pass --force to discard",
            )

    def _apply(self, base_sha: str, patches: list[series_mod.Patch], want: str) -> TreeState:
        self.git("am", "--abort", check=False)
        self.git("checkout", "-q", "-f", "-B", "fastsock", base_sha)
        self.git("clean", "-q", "-fdx")
        state = TreeState(base_sha=base_sha, input_hash="", head=base_sha)
        files = overlay_files(self.overlay)
        if files:
            for rel in files:
                dest = self.path / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(self.overlay / rel, dest)
                state.overlay_hashes[str(rel)] = _sha(self.overlay / rel)
            self.git("add", "-f", "--", *map(str, files))
            self.git("commit", "-q", "--no-verify", "-m", OVERLAY_MESSAGE)
            state.overlay_commit = self.git("rev-parse", "HEAD")
            log.info("laid %d files from kernel/ over the tree", len(files))
        for i, patch in enumerate(patches, 1):
            log.info("applying [%d/%d] %s", i, len(patches), patch.name)
            res = self.runner.run(
                ["git", "-C", self.path, "am", "-q", "--keep-cr", "--no-3way", patch.path.resolve()],
                env=GIT_IDENTITY,
                check=False,
            )
            if not res.ok:
                where = _failed_file(res.stdout + res.stderr)
                self.git("am", "--abort", check=False)
                state.head = self.git("rev-parse", "HEAD")
                self._save_state(state)  # input_hash "" marks it incomplete
                raise PatchError(
                    f"patch {patch.name} does not apply{' to ' + where if where else ''} "
                    f"(fuzz 0, on top of {i - 1} earlier patches)",
                    hint=(
                        f"the work tree {self.path} stops before it: apply it with "
                        f"`git -C {self.path} am -3 {patch.path.resolve()}`, resolve, "
                        "`git am --continue`, then `build.py refresh`"
                    ),
                )
            state.patches[self.git("rev-parse", "HEAD")] = patch.name
        state.head = self.git("rev-parse", "HEAD")
        state.input_hash = want
        self._save_state(state)
        return state

    # -- refresh ---------------------------------------------------------

    def refresh(self) -> list[str]:
        """Write the work tree's commits back into kernel/ and patches/. Returns changed paths."""
        state = self.load_state()
        if state is None:
            raise PatchError(f"no prepared work tree at {self.path}", hint="run `build.py prepare` first")
        if (
            self.git("rev-parse", "-q", "--verify", "REBASE_HEAD", check=False)
            or (self.path / ".git" / "rebase-apply").exists()
        ):
            raise PatchError(
                "a git am or rebase is in progress in the work tree",
                hint="finish it (git am --continue) or abort it first",
            )
        dirty = self.dirty_files()
        if dirty:
            raise PatchError(
                f"uncommitted edits in {self.path}: {', '.join(dirty[:5])}",
                hint=f"commit them (git -C {self.path} commit -a, or --fixup into a patch) and refresh again",
            )
        changed: list[str] = []
        kept_files: list[str] = []
        base = state.base_sha
        # Overlay: every file that HEAD has and the base does not.
        added = self.git("diff", "--name-only", "--no-renames", "--diff-filter=A", base, "HEAD").splitlines()
        want_overlay = {Path(p) for p in added if p}
        for rel in sorted(want_overlay):
            data = self.runner.run(["git", "-C", self.path, "show", f"HEAD:{rel}"]).stdout
            dest = self.overlay / rel
            recorded = state.overlay_hashes.get(str(rel))
            if state.overlay_hashes and dest.is_file() and dest.read_text() != data and recorded != _sha(dest):
                # kernel/ changed since prepare: newer work that the next prepare lays over the tree.
                kept_files.append(str(rel))
                if hashlib.sha256(data.encode()).hexdigest() != recorded:
                    log.warning(
                        "kernel/%s changed both in kernel/ (since prepare) and in the work tree: "
                        "kept kernel/'s; merge the work tree's version by hand",
                        rel,
                    )
                continue
            if not dest.is_file() or dest.read_text() != data:
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_text(data)
                changed.append(f"kernel/{rel}")
            if state.overlay_hashes:
                state.overlay_hashes[str(rel)] = _sha(dest)
        ever = set(self.git("log", "--format=", "--name-only", f"{base}..HEAD").splitlines())
        for rel in overlay_files(self.overlay):
            if rel in want_overlay:
                continue
            if str(rel) in ever:  # a work-tree commit removed it
                (self.overlay / rel).unlink()
                changed.append(f"kernel/{rel} (removed)")
            else:
                kept_files.append(str(rel))
                log.warning("kernel/%s is not in the work tree yet (kept); `build.py prepare` adds it", rel)
        # Patches: each commit's changes to files the base has.
        base_files = set(self.runner.run(["git", "-C", self.path, "ls-tree", "-r", "--name-only", base]).stdout.split())
        commits = self.git("rev-list", "--reverse", f"{base}..HEAD").splitlines()
        names: list[str] = []
        used = {p.name for p in series_mod.read_series(self.patch_dir)}
        kept = [state.patches[c] for c in commits if c in state.patches]
        next_no = 1 + max((int(n[:4]) for n in kept if n[:4].isdigit()), default=0)
        new_map: dict[str, str] = {}
        for c in commits:
            paths = [
                p
                for p in self.git("diff-tree", "--no-commit-id", "--name-only", "-r", c).splitlines()
                if p in base_files
            ]
            if not paths:
                continue
            name = state.patches.get(c)
            if name is None:
                subject = self.git("log", "-1", "--format=%s", c)
                name = f"{next_no:04d}-{series_mod.slug(subject)}.patch"
                next_no += 1
            text = self.runner.run(
                ["git", "-C", self.path, "format-patch", *FORMAT_OPTS, "--stdout", "-1", c, "--", *paths]
            ).stdout
            dest = self.patch_dir / name
            if not dest.is_file() or dest.read_text() != text:
                self.patch_dir.mkdir(parents=True, exist_ok=True)
                dest.write_text(text)
                changed.append(f"patches/{name}")
            names.append(name)
            new_map[c] = name
        for old in sorted(used - set(names)):
            (self.patch_dir / old).unlink(missing_ok=True)
            changed.append(f"patches/{old} (removed)")
        before = (self.patch_dir / "series").read_text() if (self.patch_dir / "series").exists() else None
        if names or before is not None:
            self.patch_dir.mkdir(parents=True, exist_ok=True)
            series_mod.write_series(self.patch_dir, names)
            if (self.patch_dir / "series").read_text() != before:
                changed.append("patches/series")
        state.patches = new_map
        state.head = self.git("rev-parse", "HEAD")
        # Only when kernel/ now matches the work tree: files kept from kernel/ (newer there, or
        # not in the tree yet) leave the hash stale, so the next build lays them over the tree.
        if not kept_files:
            state.input_hash = input_hash(self.overlay, self.patch_dir)
        self._save_state(state)
        return changed

    # -- export ----------------------------------------------------------

    def export(self, dest: Path) -> list[Path]:
        """The whole change (overlay + patches) as one git format-patch series in dest."""
        state = self.load_state()
        if state is None or not state.input_hash:
            raise PatchError("the work tree is not prepared", hint="run `build.py prepare` first")
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        out = self.git("format-patch", *FORMAT_OPTS, "--numbered", "-o", str(dest), f"{state.base_sha}..HEAD")
        files = [Path(line) for line in out.splitlines() if line.endswith(".patch")]
        (dest / "series").write_text("".join(f"{f.name}\n" for f in files))
        return files


def _failed_file(output: str) -> str | None:
    for pattern in (
        r"error: patch failed: (\S+:\d+)",
        r"error: (\S+): does not exist in index",
        r"error: (\S+): already exists in index",
        r"Patch failed at \d+ (.+)",
    ):
        m = re.search(pattern, output)
        if m:
            return m.group(1)
    return None

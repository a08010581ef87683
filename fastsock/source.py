"""Find the kernel source, verify it, and unpack it once into a cached git repo."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import tomllib
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .errors import SourceError
from .runner import Runner

log = logging.getLogger(__name__)

BASE_BRANCH = "fastsock-base"
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "fastsock developers",
    "GIT_AUTHOR_EMAIL": "dev@fastsock.invalid",
    "GIT_COMMITTER_NAME": "fastsock developers",
    "GIT_COMMITTER_EMAIL": "dev@fastsock.invalid",
}


@dataclass(frozen=True)
class Pin:
    version: str
    url: str
    sha256: str
    sums_url: str
    debian_tarball: Path
    debian_sha256: str = ""

    @property
    def series(self) -> tuple[int, int]:
        major, minor = self.version.split(".")[:2]
        return int(major), int(minor)

    @classmethod
    def load(cls, path: Path) -> Pin:
        try:
            data = tomllib.loads(path.read_text())
            pin = cls(
                version=str(data["version"]),
                url=str(data["url"]),
                sha256=str(data.get("sha256", "")).lower(),
                sums_url=str(data.get("sums_url", "")),
                debian_tarball=Path(data.get("debian_tarball", "/nonexistent")),
                debian_sha256=str(data.get("debian_sha256", "")).lower(),
            )
        except (OSError, tomllib.TOMLDecodeError, KeyError) as exc:
            raise SourceError(f"cannot read the kernel pin {path}: {exc}") from exc
        if not re.fullmatch(r"\d+\.\d+\.\d+", pin.version):
            raise SourceError(f"{path}: version {pin.version!r} is not of the form X.Y.Z")
        for key in ("sha256", "debian_sha256"):
            value = getattr(pin, key)
            if value and not re.fullmatch(r"[0-9a-f]{64}", value):
                raise SourceError(f"{path}: {key} {value!r} is not 64 hex digits")
        return pin


@dataclass(frozen=True)
class Source:
    """A resolved kernel source: where it came from and its cached git repo."""

    origin: str  # human-readable: the path or URL
    sha256: str  # of the tarball, or of the directory listing
    version: str  # from its Makefile
    repo: Path  # cached git repo whose branch BASE_BRANCH is the pristine tree

    def to_json(self) -> dict[str, str]:
        return {"origin": self.origin, "sha256": self.sha256, "version": self.version}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_version(tree: Path) -> str:
    """VERSION.PATCHLEVEL.SUBLEVEL from a kernel tree's top Makefile."""
    try:
        text = (tree / "Makefile").read_text(errors="replace")
    except OSError as exc:
        raise SourceError(f"{tree} is not a kernel tree (no Makefile)") from exc
    fields = {}
    for key in ("VERSION", "PATCHLEVEL", "SUBLEVEL"):
        m = re.search(rf"^{key}\s*=\s*(\d+)\s*$", text, re.M)
        if not m:
            raise SourceError(f"{tree}/Makefile has no {key} line: not a kernel tree")
        fields[key] = m.group(1)
    return f"{fields['VERSION']}.{fields['PATCHLEVEL']}.{fields['SUBLEVEL']}"


def check_version(found: str, pin: Pin) -> None:
    """Same major.minor as the pin is required; another sublevel is a warning."""
    parts = tuple(int(x) for x in found.split("."))
    if parts[:2] != pin.series:
        raise SourceError(
            f"kernel source is {found}, but fastsock targets {pin.version}",
            hint=f"use a {pin.series[0]}.{pin.series[1]}.y source (--source)",
        )
    pinned = tuple(int(x) for x in pin.version.split("."))
    if parts > pinned:
        log.warning("source %s is newer than the pin %s: accepted if the series applies", found, pin.version)
    elif parts < pinned:
        log.warning("source %s is older than the pin %s: accepted if the series applies", found, pin.version)


class SourceCache:
    """Unpacked sources under cache/base/<key>, each a git repo with the pristine tree."""

    def __init__(self, cache: Path, runner: Runner) -> None:
        self.root = cache / "base"
        self.downloads = cache / "downloads"
        self.runner = runner

    def resolve(self, pin: Pin, explicit: Path | None = None, allow_download: bool = True) -> Source:
        """Find a source in the documented order and return it, unpacked and cached."""
        if explicit is not None:
            if explicit.is_dir():
                return self._from_dir(explicit, pin)
            if explicit.is_file():
                return self._from_tarball(explicit, pin, expect_sha=None)
            raise SourceError(f"--source {explicit}: no such file or directory")
        if pin.debian_tarball.is_file():
            src = self._from_tarball(pin.debian_tarball, pin, expect_sha=None)
            if pin.debian_sha256 and src.sha256 != pin.debian_sha256:
                log.warning(
                    "%s is not the tarball this series was verified on (sha256 %s, pinned %s): "
                    "an updated Debian package; used if the series applies",
                    pin.debian_tarball,
                    src.sha256[:16],
                    pin.debian_sha256[:16],
                )
            return src
        if not allow_download:
            raise SourceError(
                f"no kernel source: {pin.debian_tarball} is missing",
                hint="apt-get install linux-source-6.12, or pass --source DIR|TARBALL",
            )
        return self._from_tarball(self._download(pin), pin, expect_sha=pin.sha256 or None)

    # -- kinds of source -------------------------------------------------

    def _from_tarball(self, tarball: Path, pin: Pin, expect_sha: str | None) -> Source:
        log.info("kernel source: %s", tarball)
        digest = sha256_file(tarball)
        if expect_sha and digest != expect_sha:
            raise SourceError(
                f"{tarball}: sha256 {digest} does not match the pin {expect_sha}",
                hint="delete the file and download again; if the pin is wrong, fix linux-pin.toml",
            )
        key = f"tar-{digest[:16]}"
        repo = self.root / key
        meta = self._meta(repo)
        if meta is None:
            self._unpack(tarball, repo)
            meta = self._commit_base(repo, origin=str(tarball), sha=digest, pin=pin)
        return Source(origin=str(tarball), sha256=digest, version=meta["version"], repo=repo)

    def _from_dir(self, tree: Path, pin: Pin) -> Source:
        tree = tree.resolve()
        log.info("kernel source: directory %s", tree)
        tree_version(tree)
        digest = self._dir_digest(tree)
        key = f"dir-{digest[:16]}"
        repo = self.root / key
        meta = self._meta(repo)
        if meta is None:
            tmp = repo.with_name(repo.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.parent.mkdir(parents=True, exist_ok=True)
            log.info("copying %s into the source cache (once)", tree)
            shutil.copytree(tree, tmp, symlinks=True, ignore=shutil.ignore_patterns(".git"))
            tmp.rename(repo)
            meta = self._commit_base(repo, origin=str(tree), sha=digest, pin=pin)
        return Source(origin=str(tree), sha256=digest, version=meta["version"], repo=repo)

    # -- helpers ---------------------------------------------------------

    @staticmethod
    def _meta(repo: Path) -> dict[str, str] | None:
        stamp = repo / ".git" / "fastsock-base.json"
        if stamp.is_file():
            return dict(json.loads(stamp.read_text()))
        if repo.exists():
            log.warning("removing incomplete source cache %s", repo)
            shutil.rmtree(repo)
        return None

    def _unpack(self, tarball: Path, repo: Path) -> None:
        tmp = repo.with_name(repo.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        log.info("unpacking %s into the source cache (once, ~20 s)", tarball.name)
        res = self.runner.run(["tar", "-xf", tarball, "-C", tmp, "--strip-components=1"], check=False)
        if not res.ok:
            shutil.rmtree(tmp, ignore_errors=True)
            raise SourceError(
                f"cannot unpack {tarball}: {res.stderr.strip()[-500:]}",
                hint="check the file and free disk space (df -h)",
            )
        tmp.rename(repo)

    def _commit_base(self, repo: Path, origin: str, sha: str, pin: Pin) -> dict[str, str]:
        try:
            version = tree_version(repo)
            check_version(version, pin)
        except SourceError:
            shutil.rmtree(repo, ignore_errors=True)
            raise
        log.info("recording the pristine %s tree as git branch %s (once, ~30 s)", version, BASE_BRANCH)
        git = ["git", "-C", repo]
        try:
            self.runner.run([*git, "init", "-q", "-b", BASE_BRANCH])
            # -f: Debian's tarball carries a .gitignore that ignores the whole top level.
            self.runner.run([*git, "add", "-A", "-f", "."])
            self.runner.run(
                [*git, "commit", "-q", "--no-verify", "-m", f"Linux {version} ({Path(origin).name})"],
                env=GIT_IDENTITY,
            )
        except Exception as exc:
            shutil.rmtree(repo, ignore_errors=True)
            raise SourceError(f"cannot create the base git repo in {repo}: {exc}") from exc
        meta = {"origin": origin, "sha256": sha, "version": version}
        (repo / ".git" / "fastsock-base.json").write_text(json.dumps(meta, indent=1))
        return meta

    @staticmethod
    def _dir_digest(tree: Path) -> str:
        h = hashlib.sha256()
        for path in sorted(tree.rglob("*")):
            if ".git" in path.parts or not path.is_file():
                continue
            st = path.stat()
            h.update(f"{path.relative_to(tree)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()

    def _download(self, pin: Pin) -> Path:
        self.downloads.mkdir(parents=True, exist_ok=True)
        dest = self.downloads / Path(pin.url).name
        if dest.is_file():
            return dest
        expect = pin.sha256
        if not expect:
            expect = self._sha_from_sums(pin, dest.name)
            log.warning(
                "linux-pin.toml has no sha256; using kernel.org's sha256sums.asc (%s). "
                "Add it to the pin to make the check independent of the server.",
                expect,
            )
        log.info("downloading %s", pin.url)
        tmp = dest.with_suffix(".part")
        try:
            with urllib.request.urlopen(pin.url, timeout=60) as resp, open(tmp, "wb") as out:
                shutil.copyfileobj(resp, out, 1 << 20)
        except OSError as exc:
            raise SourceError(
                f"cannot download {pin.url}: {exc}",
                hint="apt-get install linux-source-6.12, or pass --source DIR|TARBALL",
            ) from exc
        digest = sha256_file(tmp)
        if digest != expect:
            tmp.unlink()
            raise SourceError(f"downloaded {dest.name} has sha256 {digest}, expected {expect}")
        tmp.rename(dest)
        return dest

    @staticmethod
    def _sha_from_sums(pin: Pin, name: str) -> str:
        try:
            with urllib.request.urlopen(pin.sums_url, timeout=60) as resp:
                text = resp.read().decode(errors="replace")
        except OSError as exc:
            raise SourceError(
                f"no local kernel source and cannot reach {pin.sums_url}: {exc}",
                hint="apt-get install linux-source-6.12, or pass --source DIR|TARBALL",
            ) from exc
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1] == name and re.fullmatch(r"[0-9a-f]{64}", parts[0]):
                return parts[0]
        raise SourceError(f"{pin.sums_url} lists no sha256 for {name}")

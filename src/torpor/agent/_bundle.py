"""Deployment bundles: a project directory as one content-addressed tar.zst.

The version is the sha256 of the (deterministic) tar, so the same code always
gets the same version on every machine, and a fetched bundle is verified
against its own name before anything in it is used.

A bundle holds the project's code and data and nothing else: ``select_files``
leaves out torpor's own state (``.torpor/`` from ``torpor dev`` holds a
Postgres cluster, snapshots and API keys), virtualenvs, VCS and tool caches,
whatever the project's ``.gitignore`` files and ``exclude`` setting name, and
every entry that is not a regular file or a directory (sockets, FIFOs, devices
cannot be packaged and must never be opened).
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import stat
import tarfile
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pathspec
import zstandard

from torpor._errors import ConfigError, IntegrityError, NotFoundError
from torpor.agent._hygiene import make_read_only, remove_tree, touch_bundle
from torpor.sdk._project import MANIFEST, MB, exclude_patterns
from torpor.store import Store

VERSION_LEN = 20
MAX_BUNDLE_BYTES = 256 << 20
"""Absolute ceiling on a bundle's packaged files; fetch and the coordinator rely on it."""
DEFAULT_LIMIT_BYTES = 50 << 20
"""The limit when torpor.toml sets no ``max_bundle_mb``."""
# Never packaged, wherever they appear, whatever a .gitignore says.
_SKIP_NAMES = frozenset({".torpor", ".venv", "venv", ".git", ".hg", "__pycache__", ".mypy_cache", ".pytest_cache",
                         ".ruff_cache", "node_modules"})
_SKIP_SUFFIXES = (".pyc", ".pyo")
_GITIGNORE = ".gitignore"


@dataclass(frozen=True, kw_only=True)
class BundleFile:
    """One file a bundle packages."""

    path: str
    """Relative to the project directory, with ``/`` separators."""
    size: int
    """Bytes, as lstat saw them when the files were selected."""
    executable: bool
    """Any execute bit is set: packaged as 0755, otherwise 0644."""


def bundle_key(version: str) -> str:
    return f"deployments/{version}/bundle.tar.zst"


def _mb(n: int) -> str:
    return f"{n / MB:.1f} MB"


def _spec(lines: Iterable[str]) -> pathspec.GitIgnoreSpec | None:
    """Compile gitignore lines, skipping any it cannot parse, as git does."""
    good = []
    for line in lines:
        try:
            pathspec.GitIgnoreSpec.from_lines([line])
        except ValueError:
            continue
        good.append(line)
    spec = pathspec.GitIgnoreSpec.from_lines(good)
    return spec if any(p.include is not None for p in spec.patterns) else None


def _read_gitignore(path: str) -> pathspec.GitIgnoreSpec | None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):  # a FIFO named .gitignore must not hang the deploy
        return None
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return _spec(f.read().splitlines())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc


_Layer = tuple[str, pathspec.GitIgnoreSpec]  # (directory of the .gitignore as "a/b/" or "", its patterns)


def _excluded(rel: str, is_dir: bool, layers: tuple[_Layer, ...], extra: pathspec.GitIgnoreSpec | None) -> bool:
    """Git's rule: the last matching pattern decides, deeper .gitignore files after shallower ones."""
    name = rel + "/" if is_dir else rel  # "dir/" patterns match directories only
    ignored = False
    for base, spec in layers:
        include = spec.check_file(name[len(base):]).include
        if include is not None:
            ignored = include
    # torpor.toml's exclude only adds: its "!x" re-includes what an earlier exclude pattern left out, never what a
    # .gitignore did (.gitignore often lists secrets such as .env).
    return ignored or (extra is not None and extra.check_file(name).include is True)


def select_files(project_dir: Path, *, exclude: Sequence[str] = ()) -> list[BundleFile]:
    """The files a bundle of ``project_dir`` holds, in the order they are packaged.

    ``exclude`` holds gitignore patterns relative to ``project_dir`` (torpor.toml's ``exclude``). Excluded
    directories are not descended into. Nothing is opened but the .gitignore files.
    """
    if not project_dir.is_dir():
        raise ConfigError(f"{project_dir} is not a directory: give the project directory that holds torpor.toml")
    # torpor.toml's patterns are refused, not skipped, when malformed: the same check as load_project's.
    extra = _spec(exclude_patterns(project_dir / MANIFEST, list(exclude)))
    out: list[BundleFile] = []
    # Depth first, each directory's files (by name) before its subdirectories (by name): the order os.walk gave
    # before, so unchanged projects keep their versions.
    stack: list[tuple[str, tuple[_Layer, ...]]] = [("", ())]
    while stack:
        rel_dir, layers = stack.pop()
        here = os.path.join(project_dir, rel_dir)
        gitignore = _read_gitignore(os.path.join(here, _GITIGNORE))
        if gitignore is not None:
            layers = (*layers, (rel_dir, gitignore))
        try:
            with os.scandir(here) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            hint = f" or leave it out (exclude = [\"{rel_dir}\"] in torpor.toml)" if rel_dir else ""
            raise ConfigError(f"cannot list {here}: {exc}; fix its permissions{hint}") from exc
        subdirs: list[str] = []
        for entry in entries:
            if entry.name in _SKIP_NAMES:
                continue
            rel = rel_dir + entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # removed since the listing
                continue
            if stat.S_ISDIR(st.st_mode):
                if not _excluded(rel, True, layers, extra):
                    subdirs.append(rel + "/")
            elif stat.S_ISLNK(st.st_mode):
                # A link to a directory is also left out by a "dir/" pattern: git would not, but the user's
                # intent is plain, and the alternative here is an error, never packaging more.
                if _excluded(rel, False, layers, extra) or (entry.is_dir() and _excluded(rel, True, layers, extra)):
                    continue
                raise ConfigError(f"{entry.path} is a symbolic link; bundles hold regular files only: copy the "
                                  f"target in, or leave it out (exclude = [\"{rel}\"] in torpor.toml, or a .gitignore)")
            elif (stat.S_ISREG(st.st_mode) and not entry.name.endswith(_SKIP_SUFFIXES)
                  and not _excluded(rel, False, layers, extra)):
                out.append(BundleFile(path=rel, size=st.st_size, executable=bool(st.st_mode & 0o111)))
            # Anything else is a socket, FIFO or device (torpor dev's Postgres socket): no content to package,
            # and opening one fails or blocks.
        stack.extend((d, layers) for d in reversed(subdirs))
    return out


def check_size(project_dir: Path, files: Sequence[BundleFile], max_bytes: int = DEFAULT_LIMIT_BYTES) -> int:
    """Total bytes of ``files``; a ConfigError naming the largest files if that is over ``max_bytes``."""
    if not 0 < max_bytes <= MAX_BUNDLE_BYTES:
        raise ConfigError(f"bundle limit {max_bytes} bytes is out of range (1 byte to {MAX_BUNDLE_BYTES >> 20} MB)")
    total = sum(f.size for f in files)
    if total <= max_bytes:
        return total
    largest = sorted(files, key=lambda f: (-f.size, f.path))[:5]
    top = largest[0].path
    example = top.split("/", 1)[0] + "/" if "/" in top else "/" + top
    wanted = math.ceil(total / MB)
    raise_it = (f"raise the limit with max_bundle_mb = {wanted} in torpor.toml (at most {MAX_BUNDLE_BYTES // MB}), or "
                if wanted <= MAX_BUNDLE_BYTES // MB else
                f"the limit cannot go above {MAX_BUNDLE_BYTES // MB} MB (max_bundle_mb in torpor.toml), so ")
    lines = "\n".join(f"  {_mb(f.size):>10}  {f.path}" for f in largest)
    raise ConfigError(
        f"{project_dir}: the bundle would be {_mb(total)} in {len(files)} files, over the limit of {_mb(max_bytes)}. "
        f"Largest files:\n{lines}\n"
        f"To deploy, {raise_it}leave files out with exclude = [\"{example}\"] in torpor.toml or a .gitignore "
        f"(torpor deploy --dry-run lists what would be packaged)."
    )


def _open_checked(path: Path, size: int) -> io.BufferedReader:
    """Open a selected file, refusing it if it is no longer the regular file of ``size`` bytes that was selected."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc} (did it change during the deploy? deploy again)") from exc
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size != size:
        os.close(fd)
        raise ConfigError(f"{path} changed while it was being packaged; deploy again")
    return os.fdopen(fd, "rb")


def pack(project_dir: Path, files: Sequence[BundleFile], extra: dict[str, bytes] | None = None) -> tuple[str, bytes]:
    """Return ``(version, compressed bundle)`` holding exactly ``files`` (from ``select_files``).

    ``extra``: generated files (path: content) packaged after them, e.g. the description of the deployment's
    environment, so that changed dependencies make a new version even when the code is the same.
    """
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path_, content in sorted((extra or {}).items()):
            info = tarfile.TarInfo(path_)
            info.size, info.mode, info.mtime, info.uname, info.gname = len(content), 0o644, 0, "", ""
            tar.addfile(info, io.BytesIO(content))
        for f in files:
            info = tarfile.TarInfo(f.path)
            info.size = f.size
            info.mode = 0o755 if f.executable else 0o644
            info.mtime = 0
            info.uname = info.gname = ""
            path = project_dir / f.path
            with _open_checked(path, f.size) as fh:
                try:
                    tar.addfile(info, fh)
                except OSError as exc:  # it shrank after the check
                    raise ConfigError(f"{path} changed while it was being packaged; deploy again") from exc
    data = raw.getvalue()
    version = hashlib.sha256(data).hexdigest()[:VERSION_LEN]
    return version, zstandard.ZstdCompressor(level=10).compress(data)


def build(project_dir: Path, *, exclude: Sequence[str] = (),
          max_bytes: int = DEFAULT_LIMIT_BYTES) -> tuple[str, bytes]:
    """Return ``(version, compressed bundle)`` for a project directory.

    Refuses a project whose selected files pass ``max_bytes`` before reading any of them.
    """
    files = select_files(project_dir, exclude=exclude)
    check_size(project_dir, files, max_bytes)
    return pack(project_dir, files)


def publish(store: Store, project_dir: Path, *, exclude: Sequence[str] = (),
            max_bytes: int = DEFAULT_LIMIT_BYTES) -> str:
    """Package ``project_dir`` and store it; return its version. Idempotent."""
    version, blob = build(project_dir, exclude=exclude, max_bytes=max_bytes)
    if not store.exists(bundle_key(version)):
        store.put_bytes(bundle_key(version), blob)
    return version


def fetch(store: Store, version: str, cache_dir: Path) -> Path:
    """The unpacked, read-only code of ``version`` in ``cache_dir/<version>``."""
    if len(version) != VERSION_LEN or not all(c in "0123456789abcdef" for c in version):
        raise ConfigError(f"{version!r} is not a deployment version (expected {VERSION_LEN} hex characters)")
    target = cache_dir / version
    if target.is_dir():
        touch_bundle(target)  # its mtime is its last use: unused bundles are removed after a while
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    try:
        blob = store.get_bytes(bundle_key(version))
    except NotFoundError as exc:
        raise NotFoundError(f"deployment {version} is not in the store {store.url}: deploy it again") from exc
    try:
        data = zstandard.ZstdDecompressor().decompress(blob, max_output_size=MAX_BUNDLE_BYTES * 2)
    except zstandard.ZstdError as exc:
        raise IntegrityError(f"bundle of deployment {version} is corrupt: {exc}") from exc
    if hashlib.sha256(data).hexdigest()[:VERSION_LEN] != version:
        raise IntegrityError(f"bundle of deployment {version} does not match its version hash; refusing it")
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=cache_dir))
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
            tar.extractall(tmp, filter="data")
        make_read_only(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # another fetch may have won the race
                raise
            remove_tree(tmp)
    except BaseException:
        remove_tree(tmp)
        raise
    return target

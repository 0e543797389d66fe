"""A deployment's environment: its third-party packages, packed once, shared read-only by the runs of every host.

``torpor deploy`` resolves a project's dependencies to exact versions and
installs them for the agents' Python into one directory (cli/_environment.py);
this module packs that directory (a tar, zstd-compressed, entries sorted and
timestamps fixed, so the same packages give the same bytes), and on an agent
fetches it once, checks its sha256 before anything is unpacked, and unpacks
it under ``STATE_DIR/envs/<id>`` read-only. Containers of such a deployment
get it bound at /deps (agent/_oci.py), the same path on every host, so a
snapshot whose process maps a package's native library (numpy's .so files)
restores anywhere: CRIU finds the same bytes at the same path.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import zstandard

from torpor._errors import ConfigError, IntegrityError, NotFoundError
from torpor.agent._hygiene import make_read_only, remove_tree, touch_bundle
from torpor.store import Store

log = logging.getLogger(__name__)

ENV_ID = re.compile(r"^env-[0-9a-f]{24}$")
MAX_ENV_BYTES = 4 << 30  # packed; a bigger environment is refused at deploy
_CHUNK = 4 << 20


class WrongPython(ConfigError):
    """The environment was built for another Python than this agent runs tasks on: no retry here can help."""


def python_version(python: str) -> str:
    """``"3.11"``: the version of the interpreter tasks run on."""
    import subprocess

    out = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True,
                         text=True, timeout=30)
    if out.returncode != 0:
        raise ConfigError(f"{python} does not run: {out.stderr.strip()[-300:]}")
    return out.stdout.strip()


def environment_key(env_id: str, sha256: str = "") -> str:
    """Where an environment's archive is kept: named by its id and by the archive's own sha256.

    The id is the hash of what was asked for (the pinned set, Python, platform); two machines may build
    it into archives that differ (another uv writes other metadata). Naming the object by its sha256
    too means a second upload of the same id can never replace the bytes the first one recorded.
    Without ``sha256``: the name the first version of environments used.
    """
    return f"environments/{env_id}/{sha256}.tar.zst" if sha256 else f"environments/{env_id}.tar.zst"


def pack(site: Path, out: Path) -> tuple[str, int]:
    """Pack the directory ``site`` into ``out`` (tar + zstd, reproducible); return (sha256, size)."""
    with open(out, "wb") as raw:
        with zstandard.ZstdCompressor(level=6, threads=-1).stream_writer(raw, closefd=False) as z:
            with tarfile.open(fileobj=z, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for dirpath, dirnames, filenames in os.walk(site):
                    dirnames.sort()
                    for name in [*sorted(dirnames), *sorted(filenames)]:
                        path = Path(dirpath) / name
                        if path.is_symlink() or not (path.is_dir() or path.is_file()):
                            continue
                        info = tar.gettarinfo(str(path), arcname=str(path.relative_to(site)))
                        info.uid = info.gid = 0
                        info.uname = info.gname = ""
                        info.mtime = 0
                        info.mode = 0o755 if path.is_dir() or info.mode & 0o111 else 0o644
                        if path.is_file():
                            with open(path, "rb") as f:
                                tar.addfile(info, f)
                        else:
                            tar.addfile(info)
    h = hashlib.sha256()
    with open(out, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest(), out.stat().st_size


def unused_environments(cache_dir: Path, in_use: set[str], max_age: float, now: float | None = None) -> set[str]:
    """The unpacked environments under ``cache_dir`` that no run uses and none used for over ``max_age`` seconds.

    An environment's mtime is its last use: ``Environments.get`` touches it each time a run starts or
    restores with it.
    """
    now = time.time() if now is None else now
    out = set()
    for p in cache_dir.iterdir() if cache_dir.is_dir() else ():
        if not ENV_ID.match(p.name) or p.name in in_use:
            continue
        try:
            if now - p.stat().st_mtime > max_age:
                out.add(p.name)
        except FileNotFoundError:
            continue
    return out


class Environments:
    """The environments unpacked on this agent, fetched once each (concurrent runs wait on one fetch)."""

    def __init__(self, store: Store, cache_dir: Path, python_version: str) -> None:
        self.store = store
        self.cache_dir = cache_dir
        self.python_version = python_version
        self._lock = threading.Lock()
        self._fetching: dict[str, threading.Lock] = {}

    def get(self, env_id: str, sha256: str, python: str, location: str = "") -> Path:
        """The unpacked environment, fetched from ``location`` (default: its first-version key) if not here."""
        if not ENV_ID.match(env_id):
            raise ConfigError(f"{env_id!r} is not an environment id")
        if python and python != self.python_version:
            raise WrongPython(f"the deployment's environment {env_id} is built for Python {python}, and this "
                              f"agent's Python is {self.python_version}: deploy with python = "
                              f"\"{self.python_version}\" in torpor.toml, or run it on agents with Python {python}")
        target = self.cache_dir / env_id
        with self._lock_of(env_id):
            if target.is_dir():
                touch_bundle(target)  # its mtime is its last use (collect() removes unused ones)
                return target
            self._fetch(env_id, sha256, target, location or environment_key(env_id))
        return target

    def _lock_of(self, env_id: str) -> threading.Lock:
        with self._lock:
            return self._fetching.setdefault(env_id, threading.Lock())

    def collect(self, in_use: set[str], max_age: float, now: float | None = None) -> list[str]:
        """Remove the environments no run here uses that were last used over ``max_age`` seconds ago.

        Each is checked and removed under its own lock, the one ``get`` holds, and moved aside before it is
        deleted: a run never mounts a half-removed environment, and one being fetched is never touched.
        """
        removed = []
        for env_id in sorted(unused_environments(self.cache_dir, in_use, max_age, now)):
            with self._lock_of(env_id):
                if env_id not in unused_environments(self.cache_dir, in_use, max_age, now):
                    continue  # used again meanwhile
                doomed = self.cache_dir / f".{env_id}.removing"
                try:
                    os.rename(self.cache_dir / env_id, doomed)
                except OSError:
                    continue
                remove_tree(doomed)
                removed.append(env_id)
        if removed:
            log.info("removed %d environment(s) unused for %.0fs: %s", len(removed), max_age, ", ".join(removed))
        return removed

    def reap_leftovers(self) -> list[Path]:
        """At agent start: half-fetched archives and half-unpacked or half-removed trees of an earlier process."""
        gone = [p for p in self.cache_dir.glob(".env-*")] if self.cache_dir.is_dir() else []
        for p in gone:
            remove_tree(p)
        return gone

    def _fetch(self, env_id: str, sha256: str, target: Path, key: str) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.cache_dir, 0o711)
        blob = Path(tempfile.mkstemp(prefix=f".{env_id}.", suffix=".tar.zst", dir=self.cache_dir)[1])
        tmp = Path(tempfile.mkdtemp(prefix=f".{env_id}.", dir=self.cache_dir))
        try:
            try:
                reader = self.store.open_reader(key)
            except NotFoundError as exc:
                raise NotFoundError(f"environment {env_id} is not in the store {self.store.url}: deploy again") from exc
            h, size = hashlib.sha256(), 0
            try:
                with open(blob, "wb") as f:
                    while chunk := reader.read(_CHUNK):
                        size += len(chunk)
                        if size > MAX_ENV_BYTES:
                            raise IntegrityError(f"environment {env_id} is over {MAX_ENV_BYTES:,} bytes in the store")
                        h.update(chunk)
                        f.write(chunk)
            finally:
                reader.close()
            if h.hexdigest() != sha256:  # nothing unverified is unpacked
                raise IntegrityError(f"environment {env_id} in the store does not match its sha256; refusing it")
            with open(blob, "rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as z:
                with tarfile.open(fileobj=z, mode="r|") as tar:
                    tar.extractall(tmp, filter="data")
            make_read_only(tmp)
            os.rename(tmp, target)
        except BaseException:
            remove_tree(tmp)
            raise
        finally:
            blob.unlink(missing_ok=True)

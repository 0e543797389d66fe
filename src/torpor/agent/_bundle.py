"""Deployment bundles: a project directory as one content-addressed tar.zst.

The version is the sha256 of the (deterministic) tar, so the same code always
gets the same version on every machine, and a fetched bundle is verified
against its own name before anything in it is used.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import zstandard

from torpor._errors import ConfigError, IntegrityError, NotFoundError
from torpor.store import Store

VERSION_LEN = 20
_SKIP_DIRS = {"__pycache__", ".git", ".hg", ".venv", "venv", ".mypy_cache", ".pytest_cache", ".ruff_cache", "node_modules"}
_SKIP_SUFFIXES = (".pyc", ".pyo")
MAX_BUNDLE_BYTES = 256 << 20


def bundle_key(version: str) -> str:
    return f"deployments/{version}/bundle.tar.zst"


def _walk(root: Path) -> list[Path]:
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for name in sorted(filenames):
            if not name.endswith(_SKIP_SUFFIXES):
                out.append(Path(dirpath) / name)
    return out


def build(project_dir: Path) -> tuple[str, bytes]:
    """Return ``(version, compressed bundle)`` for a project directory."""
    if not project_dir.is_dir():
        raise ConfigError(f"{project_dir} is not a directory: give the project directory that holds torpor.toml")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in _walk(project_dir):
            rel = path.relative_to(project_dir).as_posix()
            if path.is_symlink():
                raise ConfigError(f"{path} is a symbolic link; bundles hold regular files only (copy the target in)")
            st = path.stat()
            info = tarfile.TarInfo(rel)
            info.size = st.st_size
            info.mode = 0o755 if st.st_mode & 0o111 else 0o644
            info.mtime = 0
            info.uname = info.gname = ""
            with open(path, "rb") as f:
                tar.addfile(info, f)
            if raw.tell() > MAX_BUNDLE_BYTES:
                raise ConfigError(
                    f"{project_dir} is over {MAX_BUNDLE_BYTES >> 20} MiB; keep data out of the project directory"
                )
    data = raw.getvalue()
    version = hashlib.sha256(data).hexdigest()[:VERSION_LEN]
    return version, zstandard.ZstdCompressor(level=10).compress(data)


def publish(store: Store, project_dir: Path) -> str:
    """Package ``project_dir`` and store it; return its version. Idempotent."""
    version, blob = build(project_dir)
    if not store.exists(bundle_key(version)):
        store.put_bytes(bundle_key(version), blob)
    return version


def fetch(store: Store, version: str, cache_dir: Path) -> Path:
    """The unpacked, read-only code of ``version`` in ``cache_dir/<version>``."""
    if len(version) != VERSION_LEN or not all(c in "0123456789abcdef" for c in version):
        raise ConfigError(f"{version!r} is not a deployment version (expected {VERSION_LEN} hex characters)")
    target = cache_dir / version
    if target.is_dir():
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
        for dirpath, dirnames, filenames in os.walk(tmp, topdown=False):
            for name in filenames:
                p = os.path.join(dirpath, name)
                os.chmod(p, 0o555 if os.stat(p).st_mode & 0o111 else 0o444)
            os.chmod(dirpath, 0o555)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # another fetch may have won the race
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        if tmp.exists():
            os.chmod(tmp, 0o755)
            for dirpath, dirnames, _ in os.walk(tmp):
                for d in dirnames:
                    os.chmod(os.path.join(dirpath, d), 0o755)
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target

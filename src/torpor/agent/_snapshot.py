"""Snapshots in the store: one compressed archive plus a manifest written last.

Layout under ``runs/<run_id>/checkpoints/<checkpoint_id>/``:

  snapshot.tar.zst   the CRIU image directory, tar'ed and zstd-compressed
  dump.log           CRIU's log of the dump, kept for troubleshooting
  manifest.json      files, sizes and sha256s, CRIU and deployment versions;
                     written last, so a checkpoint exists only once it is whole

Upload is one streaming pass (read → tar → zstd → sha256 → multipart upload),
and so is download (download → sha256 → unzstd → untar, hashing every file).
Nothing from a snapshot whose bytes do not match the manifest is ever used.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import tarfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

import zstandard

from torpor._errors import IntegrityError, NotFoundError, StoreError
from torpor.store import Progress, Store

MANIFEST_FORMAT = 1
_CHUNK = 1 << 20


def checkpoint_prefix(run_id: str, checkpoint_id: str) -> str:
    return f"runs/{run_id}/checkpoints/{checkpoint_id}"


@dataclass(frozen=True, kw_only=True)
class FileEntry:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True, kw_only=True)
class Manifest:
    checkpoint_id: str
    run_id: str
    kind: str
    """"suspend", "periodic" or "on_demand"."""
    created_at: str
    criu_version: str
    deployment_version: str
    parent: str | None
    archive_key: str
    archive_size: int
    archive_sha256: str
    raw_bytes: int
    files: list[FileEntry]
    dump_log_key: str | None = None
    timings_ms: dict[str, int] = field(default_factory=dict)
    format: int = MANIFEST_FORMAT

    @property
    def key(self) -> str:
        return f"{checkpoint_prefix(self.run_id, self.checkpoint_id)}/manifest.json"

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, *, key: str) -> "Manifest":
        try:
            raw = json.loads(data)
            if raw.get("format") != MANIFEST_FORMAT:
                raise IntegrityError(f"manifest {key} has format {raw.get('format')!r}; this torpor reads {MANIFEST_FORMAT}")
            raw["files"] = [FileEntry(**f) for f in raw["files"]]
            return cls(**raw)
        except (ValueError, TypeError, KeyError) as exc:
            raise IntegrityError(f"manifest {key} is not a valid torpor manifest: {exc}") from exc


class _HashingSink:
    """Counts and hashes bytes on their way into a store writer."""

    def __init__(self, writer) -> None:  # type: ignore[no-untyped-def]
        self.writer = writer
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        self.writer.write(data)
        return len(data)

    def flush(self) -> None:
        pass


class _HashingReader:
    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.sha = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.sha.update(data)
        self.size += len(data)
        return data


def _compressor() -> zstandard.ZstdCompressor:
    # Level 1 with worker threads: CRIU pages are half random, half sparse or
    # repetitive in practice; higher levels cost far more CPU than they save.
    return zstandard.ZstdCompressor(level=1, threads=-1)


def upload_image(
    store: Store,
    image_dir: Path,
    *,
    run_id: str,
    checkpoint_id: str,
    kind: str,
    criu_version: str,
    deployment_version: str,
    parent: str | None = None,
    dump_log: Path | None = None,
    timings_ms: dict[str, int] | None = None,
    progress: Progress | None = None,
) -> Manifest:
    """Stream ``image_dir`` into the store and write its manifest last."""
    prefix = checkpoint_prefix(run_id, checkpoint_id)
    archive_key = f"{prefix}/snapshot.tar.zst"
    started = time.monotonic()
    files: list[FileEntry] = []
    names = sorted(p.name for p in image_dir.iterdir() if p.is_file())
    with store.open_writer(archive_key, progress=progress) as writer:
        sink = _HashingSink(writer)
        with _compressor().stream_writer(sink, closefd=False) as zout:
            with tarfile.open(fileobj=zout, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                for name in names:
                    path = image_dir / name
                    st = path.stat()
                    info = tarfile.TarInfo(name)
                    info.size = st.st_size
                    info.mode = 0o600
                    with open(path, "rb") as f:
                        hr = _HashingReader(f)
                        tar.addfile(info, hr)  # type: ignore[arg-type]
                    files.append(FileEntry(name=name, size=st.st_size, sha256=hr.sha.hexdigest()))
    timings = dict(timings_ms or {})
    timings["upload"] = int((time.monotonic() - started) * 1000)
    dump_log_key = None
    if dump_log is not None and dump_log.exists():
        dump_log_key = f"{prefix}/dump.log"
        store.put_bytes(dump_log_key, dump_log.read_bytes())
    manifest = Manifest(
        checkpoint_id=checkpoint_id,
        run_id=run_id,
        kind=kind,
        created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(),
        criu_version=criu_version,
        deployment_version=deployment_version,
        parent=parent,
        archive_key=archive_key,
        archive_size=sink.size,
        archive_sha256=sink.sha.hexdigest(),
        raw_bytes=sum(f.size for f in files),
        files=files,
        dump_log_key=dump_log_key,
        timings_ms=timings,
    )
    store.put_bytes(manifest.key, manifest.to_json())
    return manifest


def read_manifest(store: Store, key: str) -> Manifest:
    try:
        data = store.get_bytes(key)
    except NotFoundError as exc:
        raise NotFoundError(
            f"no checkpoint manifest at {key} in {store.url}: the checkpoint was never completed or was deleted"
        ) from exc
    return Manifest.from_json(data, key=key)


def download_image(store: Store, manifest: Manifest, dest: Path, *, progress: Progress | None = None) -> None:
    """Fetch, verify and unpack a snapshot into ``dest`` (created; removed again on any failure)."""
    expected = {f.name: f for f in manifest.files}
    dest.mkdir(parents=True, exist_ok=False)
    try:
        reader = store.open_reader(manifest.archive_key, progress=progress)
        hashed = _HashingReader(reader)  # type: ignore[arg-type]
        seen: set[str] = set()
        try:
            dctx = zstandard.ZstdDecompressor()
            with dctx.stream_reader(hashed, read_size=_CHUNK, closefd=False) as zin:  # type: ignore[arg-type]
                with tarfile.open(fileobj=zin, mode="r|") as tar:  # type: ignore[call-overload]
                    for member in tar:
                        entry = expected.get(member.name)
                        if entry is None or not member.isfile() or "/" in member.name or member.name in seen:
                            raise IntegrityError(
                                f"snapshot {manifest.archive_key} holds an unexpected entry {member.name!r}; refusing it"
                            )
                        seen.add(member.name)
                        src = tar.extractfile(member)
                        assert src is not None
                        sha = hashlib.sha256()
                        size = 0
                        fd = os.open(dest / member.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                        with os.fdopen(fd, "wb") as out:
                            while chunk := src.read(_CHUNK):
                                sha.update(chunk)
                                size += len(chunk)
                                out.write(chunk)
                        if size != entry.size or sha.hexdigest() != entry.sha256:
                            raise IntegrityError(
                                f"snapshot {manifest.archive_key}: {member.name} does not match its manifest "
                                f"(size {size} vs {entry.size}, sha256 {sha.hexdigest()[:12]}… vs {entry.sha256[:12]}…); "
                                "the snapshot is corrupt and will not be restored"
                            )
            # Drain whatever follows the tar end so the whole object is hashed.
            while hashed.read(_CHUNK):
                pass
        except zstandard.ZstdError as exc:
            raise IntegrityError(
                f"snapshot {manifest.archive_key} is corrupt (zstd: {exc}); it will not be restored"
            ) from exc
        except tarfile.TarError as exc:
            raise IntegrityError(f"snapshot {manifest.archive_key} is corrupt (tar: {exc}); it will not be restored") from exc
        finally:
            reader.close()
        if hashed.size != manifest.archive_size or hashed.sha.hexdigest() != manifest.archive_sha256:
            raise IntegrityError(
                f"snapshot {manifest.archive_key} is {hashed.size} bytes with sha256 {hashed.sha.hexdigest()[:12]}…, "
                f"the manifest says {manifest.archive_size} bytes with {manifest.archive_sha256[:12]}…; "
                "it is corrupt or truncated and will not be restored"
            )
        missing = sorted(set(expected) - seen)
        if missing:
            raise IntegrityError(f"snapshot {manifest.archive_key} lacks {', '.join(missing)}; it will not be restored")
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def delete_checkpoint(store: Store, run_id: str, checkpoint_id: str) -> int:
    """Remove a checkpoint: manifest first, so a half-deleted one is never restorable."""
    prefix = checkpoint_prefix(run_id, checkpoint_id)
    try:
        store.delete(f"{prefix}/manifest.json")
        return store.delete_prefix(prefix + "/") + 1
    except StoreError:
        raise

"""Snapshots in the store: one compressed archive plus a manifest written last.

Layout under ``runs/<run_id>/checkpoints/<checkpoint_id>/``:

  snapshot.tar.zst   the CRIU image directory, tar'ed and zstd-compressed
  dump.log           CRIU's log of the dump, kept for troubleshooting
  manifest.json      files, sizes and sha256s, CRIU and deployment versions;
                     written last, so a checkpoint exists only once it is whole

Upload is one streaming pass (read → tar → zstd → sha256 → multipart upload),
and so is download (download → sha256 → unzstd → untar); the hashing runs on a
thread of its own so it overlaps the (de)compression.
Nothing from a snapshot whose bytes do not match the manifest is ever used.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import queue
import shutil
import tarfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
import zstandard

from torpor._errors import IntegrityError, NotFoundError, StoreError
from torpor.store import Progress, Store

MANIFEST_FORMAT = 1


def checkpoint_prefix(run_id: str, checkpoint_id: str) -> str:
    return f"runs/{run_id}/checkpoints/{checkpoint_id}"


@dataclass(frozen=True, kw_only=True)
class FileEntry:
    name: str
    size: int
    sha256: str = ""
    """Empty in format 1: the archive's sha256 covers every file's bytes."""


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


_BLOCK = 512
_PIPE_CHUNK = 4 << 20


class _PipelinedSink:
    """Hashes and stores compressed bytes on a thread of its own.

    The compressor (main thread) and sha256 + the store's write (this thread)
    release the GIL, so on two cores they overlap instead of taking turns.
    """

    def __init__(self, writer) -> None:  # type: ignore[no-untyped-def]
        self.writer = writer
        self.sha = hashlib.sha256()
        self.size = 0
        self._q: "queue.Queue[bytes | None]" = queue.Queue(maxsize=8)
        self._error: BaseException | None = None
        self._t = threading.Thread(target=self._run, daemon=True, name="snapshot-sink")
        self._t.start()

    def _run(self) -> None:
        while True:
            data = self._q.get()
            if data is None:
                return
            if self._error is not None:
                continue
            try:
                self.sha.update(data)
                self.size += len(data)
                self.writer.write(data)
            except BaseException as exc:  # surfaced by write()/close() in the caller
                self._error = exc

    def write(self, data: bytes) -> int:
        if self._error is not None:
            raise self._error
        self._q.put(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self._q.put(None)
        self._t.join()
        if self._error is not None:
            raise self._error


def _compressor() -> zstandard.ZstdCompressor:
    # Level 1: CRIU images are half incompressible or very repetitive in
    # practice, and level 1 already halves such data at >4 GB/s; the frame
    # checksum lets decompression itself detect corruption.
    return zstandard.ZstdCompressor(level=1, write_checksum=True)


def _tar_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o600
    return info.tobuf(format=tarfile.GNU_FORMAT)


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
    """Stream ``image_dir`` as tar → zstd → sha256 → store, and write its manifest last.

    The archive's sha256 covers every byte of every file (the tar is the
    files, in order, with their sizes); the manifest also lists each file's
    size so a restore can check it found exactly what was dumped.
    """
    prefix = checkpoint_prefix(run_id, checkpoint_id)
    archive_key = f"{prefix}/snapshot.tar.zst"
    started = time.monotonic()
    files: list[FileEntry] = []
    names = sorted(p.name for p in image_dir.iterdir() if p.is_file())
    buf = bytearray(_PIPE_CHUNK)
    view = memoryview(buf)
    with store.open_writer(archive_key, progress=progress) as writer:
        sink = _PipelinedSink(writer)
        try:
            with _compressor().stream_writer(sink, closefd=False, write_size=_PIPE_CHUNK) as z:
                for name in names:
                    path = image_dir / name
                    size = path.stat().st_size
                    z.write(_tar_header(name, size))
                    done = 0
                    with open(path, "rb", buffering=0) as f:
                        while done < size:
                            n = f.readinto(view[: min(_PIPE_CHUNK, size - done)])
                            if not n:
                                raise IntegrityError(f"{path} shrank while being archived")
                            z.write(view[:n])
                            done += n
                    z.write(b"\0" * (-size % _BLOCK))
                    files.append(FileEntry(name=name, size=size, sha256=""))
                z.write(b"\0" * (2 * _BLOCK))
        finally:
            sink.close()
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


class _Prefetch:
    """Reads and hashes the stored archive on a thread ahead of the decompressor."""

    def __init__(self, reader) -> None:  # type: ignore[no-untyped-def]
        self.reader = reader
        self.sha = hashlib.sha256()
        self.size = 0
        self._q: "queue.Queue[bytes | BaseException]" = queue.Queue(maxsize=8)
        self._pending = b""
        self._eof = False
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True, name="snapshot-prefetch")
        self._t.start()

    def _run(self) -> None:
        try:
            while not self._stop:
                chunk = self.reader.read(_PIPE_CHUNK)
                if chunk:
                    self.sha.update(chunk)
                    self.size += len(chunk)
                self._q.put(chunk)
                if not chunk:
                    return
        except BaseException as exc:  # re-raised in the consumer
            self._q.put(exc)

    def read(self, n: int = -1) -> bytes:
        while not self._pending and not self._eof:
            item = self._q.get()
            if isinstance(item, BaseException):
                raise item
            if not item:
                self._eof = True
            self._pending = item
        if n < 0 or n >= len(self._pending):
            out, self._pending = self._pending, b""
        else:
            out, self._pending = self._pending[:n], self._pending[n:]
        return out

    def drain(self) -> None:
        while self.read(_PIPE_CHUNK):
            pass

    def close(self) -> None:
        self._stop = True
        while self._t.is_alive():
            try:
                self._q.get(timeout=0.1)
            except queue.Empty:
                pass
        self.reader.close()


def _read_exact(src, n: int) -> bytes:  # type: ignore[no-untyped-def]
    out = bytearray()
    while len(out) < n:
        chunk = src.read(n - len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


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
    corrupt = f"snapshot {manifest.archive_key} is corrupt"
    try:
        src = _Prefetch(store.open_reader(manifest.archive_key, progress=progress))
        seen: list[str] = []
        try:
            with zstandard.ZstdDecompressor().stream_reader(src, read_size=_PIPE_CHUNK, closefd=False) as zin:  # type: ignore[arg-type]
                while True:
                    header = _read_exact(zin, _BLOCK)
                    if len(header) < _BLOCK:
                        raise IntegrityError(f"{corrupt} (truncated tar); it will not be restored")
                    if header == b"\0" * _BLOCK:
                        break
                    try:
                        info = tarfile.TarInfo.frombuf(header, "utf-8", "strict")
                    except tarfile.HeaderError as exc:
                        raise IntegrityError(f"{corrupt} (bad tar header: {exc}); it will not be restored") from exc
                    entry = expected.get(info.name)
                    if entry is None or not info.isfile() or "/" in info.name or info.name in seen or info.size != entry.size:
                        raise IntegrityError(f"{corrupt}: unexpected entry {info.name!r} ({info.size} bytes); refusing it")
                    seen.append(info.name)
                    fd = os.open(dest / info.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                    with os.fdopen(fd, "wb", buffering=0) as out:
                        left = info.size
                        while left:
                            chunk = zin.read(min(_PIPE_CHUNK, left))
                            if not chunk:
                                raise IntegrityError(f"{corrupt}: {info.name} is truncated; it will not be restored")
                            out.write(chunk)
                            left -= len(chunk)
                    _read_exact(zin, -info.size % _BLOCK)
                while zin.read(_PIPE_CHUNK):  # the tar's trailing zeros
                    pass
            src.drain()  # hash the whole object, whatever follows the frame
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"{corrupt} (zstd: {exc}); it will not be restored") from exc
        finally:
            src.close()
        if src.size != manifest.archive_size or src.sha.hexdigest() != manifest.archive_sha256:
            raise IntegrityError(
                f"{corrupt} or truncated: {src.size} bytes with sha256 {src.sha.hexdigest()[:12]}…, the manifest says "
                f"{manifest.archive_size} bytes with {manifest.archive_sha256[:12]}…; it will not be restored"
            )
        missing = sorted(set(expected) - set(seen))
        if missing:
            raise IntegrityError(f"{corrupt}: it lacks {', '.join(missing)}; it will not be restored")
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

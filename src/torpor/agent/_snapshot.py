"""Snapshots in the store: one compressed archive plus a manifest written last.

Layout under ``runs/<run_id>/checkpoints/<checkpoint_id>/``:

  snapshot.zst    the CRIU image directory as a record stream, zstd-compressed
  dump.log        CRIU's log of the dump, kept for troubleshooting
  manifest.json   files and sizes, the archive's size and sha256, CRIU and
                  deployment versions; written last, so a checkpoint exists
                  only once it is whole

The archive is written while CRIU is still dumping: the memory pages files,
which are nearly all of a snapshot, are read as CRIU appends to them, so
reading, compression, hashing and upload overlap the dump instead of
following it. That is why the archive is a stream of records rather than a
tar: a tar header needs a file's size before its data. Hashing runs on a
thread of its own so it overlaps (de)compression. Nothing from a snapshot
whose bytes do not match the manifest is ever used.

Record stream (inside one zstd frame with its content checksum)::

  MAGIC
  b"F" u16 name-length name      a file begins
  b"D" u32 length data           some of its bytes
  b"E" u64 size                  it ends, with this many bytes
  b"Z"                           the archive ends
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import queue
import re
import shutil
import struct
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import zstandard

from torpor._errors import IntegrityError, NotFoundError
from torpor.store import Progress, Store

MANIFEST_FORMAT = 2
MAGIC = b"TORPOR-SNAPSHOT-2\n"
_CHUNK = 4 << 20
_FOLLOW_POLL = 0.003


def checkpoint_prefix(run_id: str, checkpoint_id: str) -> str:
    return f"runs/{run_id}/checkpoints/{checkpoint_id}"


@dataclass(frozen=True, kw_only=True)
class FileEntry:
    name: str
    size: int


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
    """sha256 of the stored (compressed) archive: it covers every byte of every file."""
    raw_bytes: int
    files: list[FileEntry]
    dump_log_key: str | None = None
    timings_ms: dict[str, int] = field(default_factory=dict)
    network: str = ""
    """The run's network mode (egress, none, host; "" before it was recorded): a restore gets a fresh one."""
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


class _PipelinedSink:
    """Hashes and stores compressed bytes on a thread of its own.

    The compressor (caller's thread) and sha256 + the store's write (this
    thread) release the GIL, so on two cores they overlap instead of taking turns.
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


class ArchiveWriter:
    """Streams files into ``key`` as records; ``close()`` commits, ``abort()`` discards."""

    def __init__(self, store: Store, key: str, *, progress: Progress | None = None) -> None:
        self.key = key
        self.files: list[FileEntry] = []
        self._writer = store.open_writer(key, progress=progress)
        self._sink = _PipelinedSink(self._writer)
        # Level 1: CRIU images are half incompressible or very repetitive in
        # practice; level 1 already halves such data at > 4 GB/s. The frame
        # checksum lets decompression itself detect corruption too.
        cctx = zstandard.ZstdCompressor(level=1, write_checksum=True)
        self._z = cctx.stream_writer(self._sink, closefd=False, write_size=_CHUNK)
        self._z.write(MAGIC)
        self._buf = bytearray(_CHUNK)
        self._done = False

    def add(self, path: Path, *, growing: Callable[[], bool] | None = None) -> int:
        """Append ``path``; while ``growing()`` is true, wait for more bytes at its end."""
        name = path.name.encode()
        self._z.write(b"F" + struct.pack(">H", len(name)) + name)
        view = memoryview(self._buf)
        size = 0
        with open(path, "rb", buffering=0) as f:
            while True:
                n = f.readinto(view)
                if n:
                    self._z.write(b"D" + struct.pack(">I", n))
                    self._z.write(view[:n])
                    size += n
                elif growing is not None and growing():
                    time.sleep(_FOLLOW_POLL)
                else:
                    break
        self._z.write(b"E" + struct.pack(">Q", size))
        self.files.append(FileEntry(name=path.name, size=size))
        return size

    def close(self) -> tuple[int, str]:
        """Finish and commit; returns (stored size, sha256 of the stored bytes)."""
        self._z.write(b"Z")
        self._z.close()
        self._sink.close()
        self._writer.commit()
        self._done = True
        return self._sink.size, self._sink.sha.hexdigest()

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            self._sink.close()
        except BaseException:  # noqa: BLE001 - discarding anyway
            pass
        self._writer.abort()


_PAGES = re.compile(r"^pages-(\d+)\.img$")


class _Regrown(Exception):
    """A file grew after it was archived as complete: the archive is not usable."""


def archive_while_dumping(archive: ArchiveWriter, image_dir: Path, dumping: Callable[[], bool]) -> dict[str, int]:
    """Archive the pages files while CRIU writes them; returns {name: archived size}.

    A pages file counts as complete once CRIU has started a later one or has
    exited. ``verify_archived`` checks that afterwards, and the caller falls
    back to a plain upload if CRIU did not behave as expected.
    """
    archived: dict[str, int] = {}

    def later_exists(n: int) -> bool:
        return any((m := _PAGES.match(p.name)) and int(m.group(1)) > n for p in image_dir.iterdir())

    while dumping():
        pending = sorted((int(m.group(1)), p) for p in image_dir.iterdir()
                         if (m := _PAGES.match(p.name)) and p.name not in archived)
        if not pending:
            time.sleep(_FOLLOW_POLL)
            continue
        n, path = pending[0]
        archived[path.name] = archive.add(path, growing=lambda n=n: dumping() and not later_exists(n))
    return archived


def verify_archived(image_dir: Path, archived: dict[str, int]) -> None:
    for name, size in archived.items():
        if (image_dir / name).stat().st_size != size:
            raise _Regrown(name)


def finish_archive(archive: ArchiveWriter, image_dir: Path, archived: dict[str, int]) -> None:
    """Add every file not archived yet (CRIU is done: nothing grows any more)."""
    for path in sorted(image_dir.iterdir()):
        if path.is_file() and path.name not in archived:
            archive.add(path)


def write_manifest(store: Store, archive: ArchiveWriter, size: int, sha256: str, *, run_id: str, checkpoint_id: str,
                   kind: str, criu_version: str, deployment_version: str, parent: str | None = None,
                   dump_log: Path | None = None, timings_ms: dict[str, int] | None = None,
                   network: str = "") -> Manifest:
    prefix = checkpoint_prefix(run_id, checkpoint_id)
    dump_log_key = None
    if dump_log is not None and dump_log.exists():
        dump_log_key = f"{prefix}/dump.log"
        store.put_bytes(dump_log_key, dump_log.read_bytes())
    manifest = Manifest(
        checkpoint_id=checkpoint_id, run_id=run_id, kind=kind,
        created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(), criu_version=criu_version,
        deployment_version=deployment_version, parent=parent, archive_key=archive.key, archive_size=size,
        archive_sha256=sha256, raw_bytes=sum(f.size for f in archive.files), files=list(archive.files),
        dump_log_key=dump_log_key, timings_ms=dict(timings_ms or {}), network=network,
    )
    store.put_bytes(manifest.key, manifest.to_json())
    return manifest


def archive_key(run_id: str, checkpoint_id: str) -> str:
    return f"{checkpoint_prefix(run_id, checkpoint_id)}/snapshot.zst"


def upload_image(store: Store, image_dir: Path, *, run_id: str, checkpoint_id: str, kind: str, criu_version: str,
                 deployment_version: str, parent: str | None = None, dump_log: Path | None = None,
                 timings_ms: dict[str, int] | None = None, progress: Progress | None = None,
                 network: str = "") -> Manifest:
    """Archive a finished image directory and write its manifest last."""
    started = time.monotonic()
    archive = ArchiveWriter(store, archive_key(run_id, checkpoint_id), progress=progress)
    try:
        finish_archive(archive, image_dir, {})
        size, sha = archive.close()
    except BaseException:
        archive.abort()
        raise
    timings = {**(timings_ms or {}), "upload": int((time.monotonic() - started) * 1000)}
    return write_manifest(store, archive, size, sha, run_id=run_id, checkpoint_id=checkpoint_id, kind=kind,
                          criu_version=criu_version, deployment_version=deployment_version, parent=parent,
                          dump_log=dump_log, timings_ms=timings, network=network)


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
                chunk = self.reader.read(_CHUNK)
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
        while self.read(_CHUNK):
            pass

    def close(self) -> None:
        self._stop = True
        while self._t.is_alive():
            try:
                self._q.get(timeout=0.1)
            except queue.Empty:
                pass
        self.reader.close()


class _FileWriter:
    """Writes decompressed chunks on a thread of its own, from a small pool of buffers.

    Decompression (caller) and the file writes (here) both release the GIL,
    so they overlap; the buffers are reused, so nothing is copied twice.
    """

    def __init__(self, buffers: int = 3) -> None:
        self._free: "queue.Queue[memoryview]" = queue.Queue()
        self._buffers = buffers
        for _ in range(buffers):
            self._free.put(memoryview(bytearray(_CHUNK)))
        self._work: "queue.Queue[tuple[int, memoryview, int] | None]" = queue.Queue()
        self._error: BaseException | None = None
        self._idle = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True, name="snapshot-writer")
        self._t.start()

    def _run(self) -> None:
        while (item := self._work.get()) is not None:
            fd, buf, n = item
            try:
                if self._error is None:
                    view = buf[:n]
                    while view:
                        view = view[os.write(fd, view):]
            except BaseException as exc:  # re-raised in the caller
                self._error = exc
            finally:
                self._free.put(buf)

    def buffer(self) -> memoryview:
        if self._error is not None:
            raise self._error
        return self._free.get()

    def write(self, fd: int, buf: memoryview, n: int) -> None:
        self._work.put((fd, buf, n))

    def sync(self) -> None:
        """Wait until every buffer handed over is written (before its file is closed)."""
        held = [self._free.get() for _ in range(self._buffers)]
        for b in held:
            self._free.put(b)
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        self._work.put(None)
        self._t.join()


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
    expected = {f.name: f.size for f in manifest.files}
    dest.mkdir(parents=True, exist_ok=False)
    corrupt = f"snapshot {manifest.archive_key} is corrupt"
    try:
        src = _Prefetch(store.open_reader(manifest.archive_key, progress=progress))
        writer = _FileWriter()
        seen: set[str] = set()
        try:
            with zstandard.ZstdDecompressor().stream_reader(src, read_size=_CHUNK, closefd=False) as zin:  # type: ignore[arg-type]
                if _read_exact(zin, len(MAGIC)) != MAGIC:
                    raise IntegrityError(f"{corrupt} (not a torpor snapshot); it will not be restored")
                while True:
                    tag = _read_exact(zin, 1)
                    if tag == b"Z":
                        break
                    if tag != b"F":
                        raise IntegrityError(f"{corrupt} (bad record {tag!r}); it will not be restored")
                    (length,) = struct.unpack(">H", _read_exact(zin, 2))
                    name = _read_exact(zin, length).decode("utf-8", "replace")
                    if name not in expected or name in seen or "/" in name:
                        raise IntegrityError(f"{corrupt}: unexpected file {name!r}; refusing it")
                    seen.add(name)
                    size = 0
                    fd = os.open(dest / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                    try:
                        while (tag := _read_exact(zin, 1)) == b"D":
                            (n,) = struct.unpack(">I", _read_exact(zin, 4))
                            if n > _CHUNK:
                                raise IntegrityError(f"{corrupt} (a record of {n} bytes); it will not be restored")
                            buf = writer.buffer()
                            got = 0
                            while got < n:
                                k = zin.readinto(buf[got:n])
                                if not k:
                                    raise IntegrityError(f"{corrupt}: {name} is truncated; it will not be restored")
                                got += k
                            writer.write(fd, buf, n)
                            size += n
                        writer.sync()
                    finally:
                        os.close(fd)
                    if tag != b"E" or struct.unpack(">Q", _read_exact(zin, 8))[0] != size or size != expected[name]:
                        raise IntegrityError(f"{corrupt}: {name} has {size} bytes, the manifest says {expected[name]}; "
                                             "it will not be restored")
                while zin.read(_CHUNK):
                    pass
            src.drain()  # hash the whole object, whatever follows the frame
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"{corrupt} (zstd: {exc}); it will not be restored") from exc
        except struct.error as exc:
            raise IntegrityError(f"{corrupt} (truncated); it will not be restored") from exc
        finally:
            writer.close()
            src.close()
        if src.size != manifest.archive_size or src.sha.hexdigest() != manifest.archive_sha256:
            raise IntegrityError(
                f"{corrupt} or truncated: {src.size} bytes with sha256 {src.sha.hexdigest()[:12]}…, the manifest says "
                f"{manifest.archive_size} bytes with {manifest.archive_sha256[:12]}…; it will not be restored"
            )
        missing = sorted(set(expected) - seen)
        if missing:
            raise IntegrityError(f"{corrupt}: it lacks {', '.join(missing)}; it will not be restored")
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def delete_checkpoint(store: Store, run_id: str, checkpoint_id: str) -> int:
    """Remove a checkpoint: manifest first, so a half-deleted one is never restorable."""
    prefix = checkpoint_prefix(run_id, checkpoint_id)
    store.delete(f"{prefix}/manifest.json")
    return store.delete_prefix(prefix + "/") + 1

"""Snapshots in the store: one sealed, compressed archive plus a manifest written last.

Layout under ``runs/<run_id>/checkpoints/<checkpoint_id>/``:

  snapshot.sealed the CRIU image directory as a record stream, zstd-compressed,
                  then sealed with AES-256-GCM in segments (torpor._seal)
  dump.log        CRIU's log of the dump, kept for troubleshooting
  manifest.json   files and sizes, the archive's size, CRIU and deployment
                  versions, the KEK id and the wrapped data key; written
                  last, so a checkpoint exists only once it is whole
                  (agent/_manifest.py; format 2, from before encryption, had
                  ``snapshot.zst``: the same stream, not sealed, and its
                  sha256 in the manifest)

The archive is written while CRIU is still dumping: the memory pages files,
which are nearly all of a snapshot, are read as CRIU appends to them, so
reading, compression, sealing and upload overlap the dump instead of
following it. That is why the archive is a stream of records rather than a
tar: a tar header needs a file's size before its data. Sealing runs on a
thread of its own, so it overlaps compression. A sealed archive is not hashed:
the tag of each segment authenticates it, and sha256 cost more CPU than
AES-GCM does (docs/benchmarks.md). Nothing from a snapshot whose bytes fail
authentication or do not match the manifest is ever used (reading it back is
agent/_unpack.py).

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
import queue
import re
import struct
import threading
import time
from pathlib import Path
from typing import Callable

import zstandard

from torpor import _seal
from torpor.agent._manifest import (
    MAGIC,
    Encryption,
    FileEntry,
    Manifest,
    archive_key,
    checkpoint_prefix,
    read_manifest,
    seal_context,
)
from torpor.store import Progress, Store

__all__ = ["ArchiveWriter", "Manifest", "archive_key", "archive_while_dumping", "checkpoint_prefix",
           "delete_checkpoint", "finish_archive", "read_manifest", "upload_image", "verify_archived",
           "write_manifest"]

_CHUNK = 4 << 20
_FOLLOW_POLL = 0.003


class _PipelinedSink:
    """Seals, hashes and stores compressed bytes on a thread of its own.

    The compressor (caller's thread) and AES-GCM (or sha256) + the store's write
    (this thread) release the GIL, so on two cores they overlap instead of
    taking turns.
    """

    def __init__(self, writer, sealer: _seal.Sealer | None) -> None:  # type: ignore[no-untyped-def]
        self.writer = writer
        self.sealer = sealer
        # Only a plain archive is hashed: a sealed one's every segment carries an authentication tag, which
        # covers it better (a MAC under a secret key, not a digest beside it) and costs less CPU than sha256.
        self.sha = hashlib.sha256() if sealer is None else None
        self.size = 0
        self._q: "queue.Queue[bytes | None]" = queue.Queue(maxsize=8)
        self._error: BaseException | None = None
        self._t = threading.Thread(target=self._run, daemon=True, name="snapshot-sink")
        self._t.start()

    def _store(self, data: bytes) -> None:
        if self.sha is not None:
            self.sha.update(data)
        self.size += len(data)
        self.writer.write(data)

    def _run(self) -> None:
        while True:
            data = self._q.get()
            if self._error is not None:
                if data is None:
                    return
                continue
            try:
                if data is None:
                    if self.sealer is not None:
                        self._store(self.sealer.finish())
                    return
                if self.sealer is None:
                    self._store(data)
                else:
                    for segment in self.sealer.update(data):
                        self._store(segment)
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
    """Streams a checkpoint's files into the store as records; ``close()`` commits, ``abort()`` discards.

    With ``keys`` the archive is sealed under a fresh data key wrapped by
    ``keys.current`` (format 3); without, it is a plain compressed archive
    (format 2), which only tests of compatibility with older snapshots write.
    """

    def __init__(self, store: Store, run_id: str, checkpoint_id: str, *, keys: _seal.Keyring | None,
                 progress: Progress | None = None) -> None:
        self.key = archive_key(run_id, checkpoint_id, sealed=keys is not None)
        self.files: list[FileEntry] = []
        self.encryption: Encryption | None = None
        sealer = None
        if keys is not None:
            data_key = _seal.new_data_key()
            sealer = _seal.Sealer(data_key)
            self.encryption = Encryption(
                cipher=_seal.CIPHER, kek_id=keys.current.id, segment_bytes=_seal.SEGMENT_BYTES,
                wrapped_key=_seal.wrap(keys.current, data_key, context=seal_context(run_id, checkpoint_id)))
            del data_key
        self._writer = store.open_writer(self.key, progress=progress)
        self._sink = _PipelinedSink(self._writer, sealer)
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

    def close(self) -> tuple[int, str | None]:
        """Finish and commit; returns (stored size, sha256 of the stored bytes, None when sealed)."""
        self._z.write(b"Z")
        self._z.close()
        self._sink.close()
        self._writer.commit()
        self._done = True
        return self._sink.size, self._sink.sha.hexdigest() if self._sink.sha is not None else None

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


def write_manifest(store: Store, archive: ArchiveWriter, size: int, sha256: str | None, *, run_id: str, checkpoint_id: str,
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
        dump_log_key=dump_log_key, timings_ms=dict(timings_ms or {}), encryption=archive.encryption,
        format=3 if archive.encryption is not None else 2, network=network,
    )
    store.put_bytes(manifest.key, manifest.to_json())
    return manifest


def upload_image(store: Store, image_dir: Path, *, keys: _seal.Keyring | None, run_id: str, checkpoint_id: str,
                 kind: str, criu_version: str, deployment_version: str, parent: str | None = None,
                 dump_log: Path | None = None, timings_ms: dict[str, int] | None = None,
                 progress: Progress | None = None, network: str = "") -> Manifest:
    """Archive a finished image directory (sealed under ``keys``, see ArchiveWriter) and write its manifest last."""
    started = time.monotonic()
    archive = ArchiveWriter(store, run_id, checkpoint_id, keys=keys, progress=progress)
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


def delete_checkpoint(store: Store, run_id: str, checkpoint_id: str) -> int:
    """Remove a checkpoint: manifest first, so a half-deleted one is never restorable."""
    prefix = checkpoint_prefix(run_id, checkpoint_id)
    store.delete(f"{prefix}/manifest.json")
    return store.delete_prefix(prefix + "/") + 1

"""Snapshots out of the store: fetch, verify, open (when sealed) and unpack into a CRIU image directory.

The reverse of agent/_snapshot.py, as one pipeline over three threads: a
prefetch thread reads the stored archive, hashes it, and for a sealed archive
(format 3) authenticates and decrypts each segment; the caller's thread
decompresses and parses the records; a writer thread writes the files. Only
authenticated plaintext ever reaches the decompressor, and a snapshot whose
bytes do not match its manifest is refused with nothing left behind.
"""

from __future__ import annotations

import hashlib
import os
import queue
import shutil
import struct
import threading
from pathlib import Path

import zstandard

from torpor import _seal
from torpor._errors import IntegrityError, MissingKeyError
from torpor.agent._manifest import MAGIC, Manifest, seal_context
from torpor.store import Progress, Store

_CHUNK = 4 << 20


class _Prefetch:
    """Reads, hashes and (with an opener) authenticates and decrypts the stored archive on a thread ahead of
    the decompressor."""

    def __init__(self, reader, opener: _seal.Opener | None) -> None:  # type: ignore[no-untyped-def]
        self.reader = reader
        self.opener = opener
        # A sealed archive needs no hash: every segment's tag authenticates it, for less CPU than sha256.
        self.sha = hashlib.sha256() if opener is None else None
        self.size = 0
        self._q: "queue.Queue[bytes | BaseException]" = queue.Queue(maxsize=8)
        self._pending = b""
        self._eof = False
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True, name="snapshot-prefetch")
        self._t.start()

    def _run(self) -> None:
        try:
            size = self.opener.unit if self.opener is not None else _CHUNK
            while not self._stop:
                chunk = self.reader.read(size)
                if chunk:
                    if self.sha is not None:
                        self.sha.update(chunk)
                    self.size += len(chunk)
                if self.opener is None:
                    self._q.put(chunk)
                elif chunk:
                    for plain in self.opener.update(chunk):
                        self._q.put(plain)
                else:
                    last = self.opener.finish()
                    if last:
                        self._q.put(last)
                    self._q.put(b"")
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


def open_key(manifest: Manifest, keys: _seal.Keyring | None, *, sealed_under: str | None = None) -> bytes | None:
    """The data key of a sealed snapshot (None for format 2); MissingKeyError names the KEK it needs.

    ``sealed_under``: the key id the checkpoint was recorded with; anything else is refused (a forged
    unencrypted manifest in the place of a sealed one).
    """
    enc = manifest.encryption
    what = f"checkpoint {manifest.checkpoint_id} of run {manifest.run_id}"
    if sealed_under and (enc is None or enc.kek_id != sealed_under):
        raise IntegrityError(f"{what} was recorded as sealed under snapshot key {sealed_under}, but its manifest "
                             f"{'is not encrypted' if enc is None else 'names ' + enc.kek_id}: it was altered; "
                             "it will not be restored")
    if enc is None:
        return None
    if enc.cipher != _seal.CIPHER:
        raise IntegrityError(f"{what} is sealed with {enc.cipher!r}; this torpor knows only {_seal.CIPHER}")
    kek = keys.find(enc.kek_id) if keys is not None else None
    if kek is None:
        have = f"it has {', '.join(keys.ids)}" if keys is not None else "it has none"
        raise MissingKeyError(f"{what} is encrypted with snapshot key {enc.kek_id}, which was not given ({have}); "
                              "that key must be among the coordinator's --snapshot-key-file, "
                              "--snapshot-old-key-file or the key it keeps in Postgres", kek_id=enc.kek_id)
    try:
        return _seal.unwrap(kek, enc.wrapped_key, context=seal_context(manifest.run_id, manifest.checkpoint_id))
    except IntegrityError as exc:
        raise IntegrityError(f"{what} cannot be opened: {exc}; it will not be restored") from None


def download_image(store: Store, manifest: Manifest, dest: Path, *, keys: _seal.Keyring | None,
                   progress: Progress | None = None) -> None:
    """Fetch, verify (and open, when sealed) and unpack a snapshot into ``dest`` (created; removed again on any
    failure)."""
    expected = {f.name: f.size for f in manifest.files}
    data_key = open_key(manifest, keys)
    corrupt = f"snapshot {manifest.archive_key} is corrupt"
    opener = None
    if data_key is not None:
        assert manifest.encryption is not None
        opener = _seal.Opener(data_key, manifest.encryption.segment_bytes,
                              what=f"snapshot {manifest.archive_key} is corrupt or was tampered with")
    dest.mkdir(parents=True, exist_ok=False)
    try:
        src = _Prefetch(store.open_reader(manifest.archive_key, progress=progress), opener)
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
            src.drain()  # read (and hash or authenticate) the whole object, whatever follows the frame
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"{corrupt} (zstd: {exc}); it will not be restored") from exc
        except struct.error as exc:
            raise IntegrityError(f"{corrupt} (truncated); it will not be restored") from exc
        finally:
            writer.close()
            src.close()
        if src.size != manifest.archive_size:
            raise IntegrityError(f"{corrupt} or truncated: {src.size} bytes, the manifest says "
                                 f"{manifest.archive_size}; it will not be restored")
        if src.sha is not None and src.sha.hexdigest() != manifest.archive_sha256:
            raise IntegrityError(
                f"{corrupt}: its sha256 is {src.sha.hexdigest()[:12]}…, the manifest says "
                f"{(manifest.archive_sha256 or '')[:12]}…; it will not be restored"
            )
        missing = sorted(set(expected) - seen)
        if missing:
            raise IntegrityError(f"{corrupt}: it lacks {', '.join(missing)}; it will not be restored")
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise



"""The storage interface every backend implements.

Keys are relative ("runs/<id>/checkpoints/<cid>/manifest.json"); each store
joins them under its own root or prefix. A writer is atomic: readers see either
nothing or the whole object, never a partial one, so a crash mid-upload never
leaves a referenced partial snapshot.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Callable, Iterable, Protocol

from torpor._errors import ConfigError

Progress = Callable[[int], None]
"""Called with the number of bytes just moved (not a running total)."""


class Reader(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...
    def close(self) -> None: ...


class Writer(abc.ABC):
    """A streaming upload. ``commit()`` makes the object visible; ``abort()`` discards it.

    As a context manager it commits on success and aborts on an exception.
    """

    @abc.abstractmethod
    def write(self, data: bytes | memoryview, /) -> int: ...

    @abc.abstractmethod
    def commit(self) -> None: ...

    @abc.abstractmethod
    def abort(self) -> None: ...

    def __enter__(self) -> "Writer":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


@dataclass(frozen=True, kw_only=True)
class Folder:
    """Everything stored under one key prefix that ends in '/' (a checkpoint's objects, say)."""

    prefix: str
    """The folder's key prefix, ending in '/'."""
    newest: float
    """Unix time of the newest thing in it: an object, or a partial write still under way."""
    objects: int = 0
    """Committed objects in it."""
    size: int = 0
    """Bytes in those objects."""
    partial: int = 0
    """Partial writes in it: a file store's temporary files, S3 multipart uploads not completed."""


@dataclass(frozen=True, kw_only=True)
class FolderListing:
    folders: list[Folder]
    """Sorted by prefix."""
    listed_at: float
    """The store's own clock (unix seconds) when the listing began: compare ``Folder.newest`` with this,
    not with the local clock, and clock skew between hosts does not enter."""


class Store(abc.ABC):
    url: str
    """The URL this store was opened from, credentials removed."""

    @abc.abstractmethod
    def open_writer(self, key: str, *, progress: Progress | None = None) -> Writer: ...

    @abc.abstractmethod
    def open_reader(self, key: str, *, progress: Progress | None = None) -> Reader:
        """Raises NotFoundError when ``key`` does not exist."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    def size(self, key: str) -> int:
        """Raises NotFoundError when ``key`` does not exist."""

    @abc.abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Every key under ``prefix``, sorted."""

    @abc.abstractmethod
    def folders(self, prefix: str, *, depth: int) -> FolderListing:
        """The folders ``depth`` segments below ``prefix`` ("" or ending in '/'), in one listing pass.

        A key belongs to the folder named by its first ``depth`` segments after
        ``prefix``; keys with fewer segments belong to none. Partial writes
        count (their time too: an upload under way keeps its folder new), so a
        folder may hold nothing but partial writes.
        """

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Deleting a missing key is not an error."""

    @abc.abstractmethod
    def check(self) -> None:
        """Raise StoreError (with what to do) unless the store is reachable and writable."""

    def put_bytes(self, key: str, data: bytes) -> None:
        with self.open_writer(key) as w:
            w.write(data)

    def get_bytes(self, key: str) -> bytes:
        r = self.open_reader(key)
        try:
            chunks = []
            while True:
                chunk = r.read(1 << 20)
                if not chunk:
                    return b"".join(chunks)
                chunks.append(chunk)
        finally:
            r.close()

    def delete_prefix(self, prefix: str, *, partial: bool = False) -> int:
        """Delete every object under ``prefix``; returns how many.

        With ``partial``, partial writes under it are discarded first (a
        writer still using one then fails when it commits): for leftovers of
        writers known to be gone, never for a prefix something may be writing.
        """
        if partial:
            self.discard_partial(prefix)
        keys = self.list(prefix)
        for key in keys:
            self.delete(key)
        return len(keys)

    def discard_partial(self, prefix: str) -> int:
        """Discard the partial writes under ``prefix``; returns how many. Nothing to do for a store without any."""
        return 0

    def close(self) -> None:
        """Release connections and threads."""


def folder_prefix(prefix: str) -> str:
    """Check a ``folders()`` prefix: empty or ending in '/'."""
    if prefix and not prefix.endswith("/"):
        raise ConfigError(f"folder listing prefix {prefix!r} must be empty or end with '/'")
    return prefix


def group_folders(prefix: str, depth: int, entries: Iterable[tuple[str, float, int, bool | None]]) -> list[Folder]:
    """Fold (key, modified, size, partial) entries into the folders ``depth`` segments below ``prefix``.

    ``partial`` is True for a partial write, False for an object, None for a
    directory (a name ending in '/', counted for its time only).
    """
    if depth < 1:
        raise ConfigError(f"folder depth must be at least 1, not {depth}")
    found: dict[str, list[float]] = {}  # prefix -> [newest, objects, size, partial]
    for key, modified, size, is_partial in entries:
        if not key.startswith(prefix):
            continue
        parts = key[len(prefix):].split("/")
        if len(parts) <= depth:
            continue  # an object above the folder level: in no folder
        name = prefix + "/".join(parts[:depth]) + "/"
        acc = found.setdefault(name, [modified, 0, 0, 0])
        acc[0] = max(acc[0], modified)
        if is_partial:
            acc[3] += 1
        elif is_partial is False:
            acc[1] += 1
            acc[2] += size
    return [Folder(prefix=name, newest=acc[0], objects=int(acc[1]), size=int(acc[2]), partial=int(acc[3]))
            for name, acc in sorted(found.items())]

"""The storage interface every backend implements.

Keys are relative ("runs/<id>/checkpoints/<cid>/manifest.json"); each store
joins them under its own root or prefix. A writer is atomic: readers see either
nothing or the whole object, never a partial one, so a crash mid-upload never
leaves a referenced partial snapshot.
"""

from __future__ import annotations

import abc
from typing import Callable, Protocol

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

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list(prefix)
        for key in keys:
            self.delete(key)
        return len(keys)

    def close(self) -> None:
        """Release connections and threads."""

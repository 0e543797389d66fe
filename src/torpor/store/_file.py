"""A store in a local directory (``file:///path``), the embedded default.

A write goes to a hidden temporary file in the key's own directory, is
fsynced, and is renamed over the key on commit (then the directory is
fsynced), so a crash leaves either the old state or the whole new object.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import tempfile
import time
import uuid
from pathlib import Path

from torpor._errors import NotFoundError, StoreError
from torpor.store._base import (
    FolderListing,
    Progress,
    Reader,
    Store,
    Writer,
    folder_prefix,
    group_folders,
)
from torpor.store._open import TEMP_SUFFIX, check_key

log = logging.getLogger(__name__)


class FileStore(Store):
    def __init__(self, root: str) -> None:
        self.root = Path(root)
        self.url = self.root.as_uri()

    def __repr__(self) -> str:
        return f"FileStore({self.url!r})"

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    def open_writer(self, key: str, *, progress: Progress | None = None) -> Writer:
        return _FileWriter(self, key, self._path(key), progress)

    def open_reader(self, key: str, *, progress: Progress | None = None) -> Reader:
        path = self._path(key)
        try:
            f = open(path, "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFoundError(f"no object {key!r} in {self.url}") from None
        except OSError as exc:
            raise StoreError(f"cannot open {path} for reading: {exc.strerror}") from exc
        return _FileReader(f, progress)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        path = self._path(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise NotFoundError(f"no object {key!r} in {self.url}") from None
        except OSError as exc:
            raise StoreError(f"cannot stat {path}: {exc.strerror}") from exc
        if not path.is_file():
            raise NotFoundError(f"no object {key!r} in {self.url} ({path} is not a regular file)")
        return st.st_size

    def list(self, prefix: str) -> list[str]:
        check_key(prefix, prefix=True)
        # Walk only the deepest directory the prefix fully names, then filter
        # by string prefix, which is what S3 does.
        head = prefix.rpartition("/")[0]
        start = self.root.joinpath(*head.split("/")) if head else self.root
        keys = []
        try:
            for dirpath, dirnames, filenames in os.walk(start, onerror=_raise):
                dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
                rel = Path(dirpath).relative_to(self.root).as_posix()
                base = "" if rel == "." else rel + "/"
                keys.extend(
                    base + name
                    for name in filenames
                    if not name.endswith(TEMP_SUFFIX) and (base + name).startswith(prefix)
                )
        except (FileNotFoundError, NotADirectoryError):
            pass
        except OSError as exc:
            raise StoreError(f"cannot list {start}: {exc.strerror}") from exc
        return sorted(keys)

    def _walk(self, prefix: str):  # type: ignore[no-untyped-def]
        """(relative name, lstat) of every file and directory below the deepest directory ``prefix`` names.

        Names are filtered by string prefix, as ``list`` does; symlinked
        directories are not followed.
        """
        check_key(prefix, prefix=True)
        head = prefix.rpartition("/")[0]
        start = self.root.joinpath(*head.split("/")) if head else self.root
        pending = [(start, head + "/" if head else "")]
        while pending:
            directory, base = pending.pop()
            try:
                with os.scandir(directory) as it:
                    entries = list(it)
            except (FileNotFoundError, NotADirectoryError):
                continue  # removed meanwhile, or never there
            except OSError as exc:
                raise StoreError(f"cannot list {directory}: {exc.strerror}") from exc
            for entry in entries:
                name = base + entry.name
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise StoreError(f"cannot stat {entry.path}: {exc.strerror}") from exc
                if stat.S_ISDIR(st.st_mode):
                    if (name + "/").startswith(prefix):
                        pending.append((Path(entry.path), name + "/"))
                        yield name + "/", st
                elif name.startswith(prefix):
                    yield name, st

    def folders(self, prefix: str, *, depth: int) -> FolderListing:
        listed_at = time.time()

        def entries():  # type: ignore[no-untyped-def]
            for name, st in self._walk(folder_prefix(prefix)):
                if name.endswith("/"):
                    # A directory's own time: a writer creating or renaming a file in it keeps it new.
                    yield name, st.st_mtime, 0, None
                elif stat.S_ISREG(st.st_mode):
                    yield name, st.st_mtime, st.st_size, name.endswith(TEMP_SUFFIX)

        return FolderListing(folders=group_folders(prefix, depth, entries()), listed_at=listed_at)

    def discard_partial(self, prefix: str) -> int:
        """Remove the temporary files of unfinished writes under ``prefix``, then its empty directories."""
        found = list(self._walk(prefix))
        removed = 0
        for name, st in found:
            if stat.S_ISREG(st.st_mode) and name.endswith(TEMP_SUFFIX):
                path = self.root.joinpath(*name.split("/"))
                try:
                    path.unlink()
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise StoreError(f"cannot remove the partial write {path}: {exc.strerror}") from exc
                removed += 1
        # Deepest first, so a directory is empty by the time its turn comes; the one the prefix names last.
        head = prefix.rpartition("/")[0]
        dirs = sorted((n.rstrip("/") for n, st in found if n.endswith("/")), key=lambda n: n.count("/"), reverse=True)
        for name in [*dirs, head] if head else dirs:
            self._prune(self.root.joinpath(*name.split("/")))
        return removed

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            return
        except IsADirectoryError:
            return  # a "directory" is not an object; nothing to delete
        except OSError as exc:
            raise StoreError(f"cannot delete {path}: {exc.strerror}") from exc
        self._prune(path.parent)

    def _prune(self, directory: Path) -> None:
        """Remove empty directories from ``directory`` up to (not including) the root."""
        while directory != self.root and self.root in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return  # not empty (or a concurrent writer just used it): stop there
            directory = directory.parent

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"store directory {self.root} cannot be created: {exc.strerror}; create it or choose "
                "another file:// URL"
            ) from exc
        probe = f".torpor-check-{uuid.uuid4().hex}"
        try:
            self.put_bytes(probe, b"ok")
            if self.get_bytes(probe) != b"ok":
                raise StoreError(f"store directory {self.root} did not return what was written to it")
        except StoreError as exc:
            raise StoreError(f"store directory {self.root} is not writable: {exc}; fix its permissions") from exc
        finally:
            self.delete(probe)


def _raise(exc: OSError) -> None:
    raise exc


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _makedirs(directory: Path, root: Path) -> None:
    """Create ``directory`` and its missing parents, fsyncing each parent so the new entries are durable."""
    missing = []
    d = directory
    while not d.is_dir():
        missing.append(d)
        if d == root or d.parent == d:
            break
        d = d.parent
    for d in reversed(missing):
        try:
            d.mkdir(parents=d == root)
        except FileExistsError:
            continue
        _fsync_dir(d.parent)


class _FileWriter(Writer):
    def __init__(self, store: FileStore, key: str, path: Path, progress: Progress | None) -> None:
        self._store = store
        self._key = key
        self._path = path
        self._progress = progress
        self._done = False
        self._tmp, fd = self._create_temp()
        self._file = os.fdopen(fd, "wb")

    def _create_temp(self) -> tuple[Path, int]:
        directory = self._path.parent
        # A concurrent delete may prune the directory between mkdir and mkstemp: try again.
        for attempt in range(3):
            try:
                _makedirs(directory, self._store.root)
                fd, name = tempfile.mkstemp(dir=directory, prefix="." + self._path.name[:64] + ".", suffix=TEMP_SUFFIX)
                return Path(name), fd
            except FileNotFoundError:
                if attempt == 2:
                    raise StoreError(f"cannot create a file in {directory}: it keeps disappearing") from None
            except OSError as exc:
                raise StoreError(
                    f"cannot write {self._key!r} under {self._store.root}: {exc.strerror}; check the "
                    "directory's permissions and free space"
                ) from exc
        raise AssertionError("unreachable")

    def write(self, data: bytes | memoryview, /) -> int:
        if self._done:
            raise StoreError(f"write to {self._key!r} after it was committed or aborted")
        try:
            n = self._file.write(data)
        except OSError as exc:
            self.abort()
            raise StoreError(f"writing {self._key!r} to {self._tmp} failed: {exc.strerror}") from exc
        if self._progress is not None and n:
            self._progress(n)
        return n

    def commit(self) -> None:
        if self._done:
            raise StoreError(f"{self._key!r} was already committed or aborted")
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self._tmp, self._path)
            _fsync_dir(self._path.parent)
        except OSError as exc:
            self.abort()
            hint = " (a directory has that name)" if exc.errno == errno.EISDIR else ""
            raise StoreError(f"committing {self._key!r} to {self._path} failed: {exc.strerror}{hint}") from exc
        self._done = True

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            self._file.close()
        except OSError:
            pass
        try:
            self._tmp.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("could not remove partial write %s: %s", self._tmp, exc.strerror)


class _FileReader:
    def __init__(self, f, progress: Progress | None) -> None:
        self._f = f
        self._progress = progress

    def read(self, n: int = -1, /) -> bytes:
        try:
            data = self._f.read(n)
        except OSError as exc:
            raise StoreError(f"reading {self._f.name} failed: {exc.strerror}") from exc
        if self._progress is not None and data:
            self._progress(len(data))
        return data

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "_FileReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

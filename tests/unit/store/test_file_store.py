"""The local directory store: atomic writes, key confinement, tidy directories."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from torpor._errors import ConfigError, StoreError
from torpor.store import open_store
from torpor.store._file import FileStore


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    s = open_store((tmp_path / "root").as_uri())
    assert isinstance(s, FileStore)
    return s


def all_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("key", ["../escape", "/etc/passwd", "a/../../escape", "a//b", "", "x.torpor-tmp"])
def test_keys_may_not_escape_the_root(store: FileStore, tmp_path: Path, key: str) -> None:
    for call in (
        lambda: store.open_writer(key),
        lambda: store.open_reader(key),
        lambda: store.exists(key),
        lambda: store.size(key),
        lambda: store.delete(key),
        lambda: store.put_bytes(key, b"x"),
    ):
        with pytest.raises(ConfigError):
            call()
    assert not (tmp_path / "escape").exists()
    with pytest.raises(ConfigError):
        store.list("../")


def test_uncommitted_write_is_invisible_and_abort_leaves_nothing(store: FileStore) -> None:
    w = store.open_writer("runs/r1/snap")
    w.write(b"partial")
    assert not store.exists("runs/r1/snap")
    assert store.list("") == []
    assert len(all_files(store.root)) == 1  # the hidden temporary file, in the key's directory
    w.abort()
    assert all_files(store.root) == []
    w.abort()  # idempotent


def test_leftover_temp_file_from_a_crash_is_not_an_object(store: FileStore) -> None:
    store.put_bytes("a/obj", b"1")
    w = store.open_writer("a/other")
    w.write(b"never committed")  # the process "dies" here: no commit, no abort
    assert store.list("") == ["a/obj"]
    assert not store.exists("a/other")
    w.abort()


def test_commit_replaces_atomically_and_fsyncs(store: FileStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.put_bytes("k", b"old")
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    with store.open_writer("k") as w:
        w.write(b"new")
        assert store.get_bytes("k") == b"old"
    assert store.get_bytes("k") == b"new"
    assert len(synced) >= 2  # the file, then its directory


def test_write_after_commit_or_abort_is_an_error(store: FileStore) -> None:
    w = store.open_writer("k")
    w.commit()
    with pytest.raises(StoreError):
        w.write(b"x")
    with pytest.raises(StoreError):
        w.commit()
    w2 = store.open_writer("k2")
    w2.abort()
    with pytest.raises(StoreError):
        w2.commit()


def test_delete_prunes_empty_directories_but_keeps_the_root(store: FileStore) -> None:
    store.put_bytes("runs/r1/checkpoints/c1/manifest.json", b"{}")
    store.put_bytes("runs/r2/x", b"")
    store.delete("runs/r1/checkpoints/c1/manifest.json")
    assert not (store.root / "runs" / "r1").exists()
    assert (store.root / "runs" / "r2").is_dir()
    store.delete_prefix("")
    assert store.root.is_dir() and list(store.root.iterdir()) == []


def test_a_directory_is_not_an_object(store: FileStore) -> None:
    store.put_bytes("dir/obj", b"x")
    assert not store.exists("dir")
    store.delete("dir")  # not an object: nothing happens
    assert store.exists("dir/obj")
    with pytest.raises(StoreError, match="directory"):
        store.put_bytes("dir", b"clash")
    assert store.list("") == ["dir/obj"]


def test_check_creates_the_root(store: FileStore) -> None:
    assert not store.root.exists()
    store.check()
    assert store.root.is_dir() and list(store.root.iterdir()) == []


def test_check_fails_clearly_when_the_root_cannot_exist(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    store = open_store((tmp_path / "file" / "store").as_uri())
    with pytest.raises(StoreError) as info:
        store.check()
    assert str(tmp_path / "file" / "store") in str(info.value)

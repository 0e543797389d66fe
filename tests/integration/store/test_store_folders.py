"""Folder listings (what the orphan sweeper reads) and deleting partial writes, on a directory and a real S3."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from torpor._errors import ConfigError, StoreError
from torpor.store import Store
from torpor.store._file import FileStore
from torpor.store._open import TEMP_SUFFIX

MiB = 1024 * 1024


def temp_files(store: Store) -> list[str]:
    assert isinstance(store, FileStore)
    return sorted(p.relative_to(store.root).as_posix() for p in store.root.rglob("*" + TEMP_SUFFIX))


def unfinished(request: pytest.FixtureRequest, store: Store) -> list[str]:
    """Partial writes left in the store, whichever kind it is."""
    if isinstance(store, FileStore):
        return temp_files(store)
    target = request.getfixturevalue("s3_target")
    return sorted(u["Key"][len(target.prefix):] for u in target.multipart_uploads())


def test_folders_group_keys_with_their_newest_time(any_store: Store) -> None:
    before = time.time()
    keys = {
        "runs/r1/checkpoints/a/snapshot.zst": b"x" * 1000,
        "runs/r1/checkpoints/a/manifest.json": b"{}",
        "runs/r1/checkpoints/b/dump.failed.log": b"log",
        "runs/r2/checkpoints/c/deeper/still/in/c": b"1",
        "runs/r1/loose": b"above the folder level",
        "runs/r1/checkpoints/not-a-folder": b"neither",
        "deployments/v1/bundle.tar.zst": b"outside the prefix",
    }
    for key, data in keys.items():
        any_store.put_bytes(key, data)
    listing = any_store.folders("runs/", depth=3)
    assert [(f.prefix, f.objects, f.size, f.partial) for f in listing.folders] == [
        ("runs/r1/checkpoints/a/", 2, 1002, 0),
        ("runs/r1/checkpoints/b/", 1, 3, 0),
        ("runs/r2/checkpoints/c/", 1, 1, 0),
    ]
    # The store's clock and the objects' times agree with this host's within a little (all local here).
    assert abs(listing.listed_at - time.time()) < 5
    for f in listing.folders:
        assert before - 5 < f.newest <= listing.listed_at + 5
    assert any_store.folders("runs/r2/", depth=2).folders[0].prefix == "runs/r2/checkpoints/c/"
    assert any_store.folders("nothing/", depth=1).folders == []


def test_a_folder_prefix_must_name_a_folder(any_store: Store) -> None:
    with pytest.raises(ConfigError, match="end with '/'"):
        any_store.folders("runs", depth=3)
    with pytest.raises(ConfigError, match="depth"):
        any_store.folders("runs/", depth=0)


def test_a_write_under_way_counts_and_delete_prefix_partial_discards_it(any_store: Store,
                                                                       request: pytest.FixtureRequest) -> None:
    key = "runs/r/checkpoints/p/snapshot.zst"
    w = any_store.open_writer(key)
    try:
        w.write(os.urandom(6 * MiB))  # more than a part: on S3 a multipart upload is under way
        any_store.put_bytes("runs/r/checkpoints/q/manifest.json", b"{}")
        before = time.time()
        folders = {f.prefix: f for f in any_store.folders("runs/", depth=3).folders}
        assert set(folders) == {"runs/r/checkpoints/p/", "runs/r/checkpoints/q/"}
        p = folders["runs/r/checkpoints/p/"]
        assert (p.objects, p.size, p.partial) == (0, 0, 1)
        assert p.newest > before - 30
        assert unfinished(request, any_store) != []

        # The janitor's delete leaves a write under way alone; the sweeper's discards it.
        assert any_store.delete_prefix("runs/r/checkpoints/p/") == 0
        assert unfinished(request, any_store) != []
        assert any_store.delete_prefix("runs/r/checkpoints/p/", partial=True) == 0
        assert unfinished(request, any_store) == []
        assert [f.prefix for f in any_store.folders("runs/", depth=3).folders] == ["runs/r/checkpoints/q/"]
        with pytest.raises(StoreError):
            w.write(os.urandom(MiB))
            w.commit()  # the writer was gone for good: its object never appears
        assert not any_store.exists(key)
    finally:
        w.abort()


def test_the_janitors_delete_prefix_lets_a_write_under_way_finish(any_store: Store) -> None:
    key = "runs/r/checkpoints/p/snapshot.zst"
    with any_store.open_writer(key) as w:
        w.write(os.urandom(6 * MiB))
        any_store.put_bytes("runs/r/checkpoints/p/dump.log", b"log")
        assert any_store.delete_prefix("runs/r/checkpoints/p/") == 1
    assert any_store.list("runs/") == [key]


def test_file_store_folders_take_partial_writes_and_directories_into_account(tmp_path: Path) -> None:
    store = FileStore(str(tmp_path / "store"))
    store.put_bytes("runs/r/checkpoints/old/snapshot.zst", b"x")
    w = store.open_writer("runs/r/checkpoints/old/manifest.json")  # a writer that died before its commit
    w.write(b"{" * 10)
    w._file.flush()  # type: ignore[attr-defined]
    folder = tmp_path / "store/runs/r/checkpoints/old"
    (folder / "empty-leftover").mkdir()
    old = time.time() - 7200
    for p in [folder, folder / "empty-leftover", *folder.iterdir()]:
        os.utime(p, (old, old))
    (f,) = store.folders("runs/", depth=3).folders
    assert (f.objects, f.size, f.partial) == (1, 1, 1)
    assert f.newest == pytest.approx(old, abs=1)
    # A directory's own time counts: creating anything in it makes the folder new.
    os.utime(folder / "empty-leftover", None)
    assert store.folders("runs/", depth=3).folders[0].newest > old + 3600
    # Deleting with partial writes removes everything, the directories too.
    assert store.delete_prefix("runs/r/checkpoints/old/", partial=True) == 1
    assert not (tmp_path / "store/runs").exists()
    w.abort()

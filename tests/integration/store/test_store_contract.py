"""What every store promises, run against the local directory and a real S3 server."""

from __future__ import annotations

import os

import pytest

from torpor._errors import ConfigError, NotFoundError, StoreError
from torpor.store import Store

MiB = 1024 * 1024


def write_in_pieces(store: Store, key: str, data: bytes, piece: int, progress=None) -> None:
    with store.open_writer(key, progress=progress) as w:
        view = memoryview(data)
        for start in range(0, len(data), piece):
            assert w.write(view[start : start + piece]) == len(view[start : start + piece])


def test_small_round_trip(any_store: Store) -> None:
    any_store.put_bytes("runs/r1/manifest.json", b'{"ok": true}')
    assert any_store.get_bytes("runs/r1/manifest.json") == b'{"ok": true}'
    assert any_store.size("runs/r1/manifest.json") == 12
    assert any_store.exists("runs/r1/manifest.json")


def test_empty_object(any_store: Store) -> None:
    any_store.put_bytes("empty", b"")
    assert any_store.exists("empty") and any_store.size("empty") == 0
    assert any_store.get_bytes("empty") == b""


@pytest.mark.parametrize("size", [5 * MiB, 12 * MiB + 12345])
def test_multipart_sized_round_trip(any_store: Store, size: int) -> None:
    data = os.urandom(size)
    write_in_pieces(any_store, "big", data, piece=1_000_003)  # pieces that straddle part boundaries
    assert any_store.size("big") == size
    assert any_store.get_bytes("big") == data


def test_read_returns_exactly_n_until_the_end(any_store: Store) -> None:
    data = os.urandom(11 * MiB + 7)
    any_store.put_bytes("obj", data)
    r = any_store.open_reader("obj")
    try:
        got = []
        while chunk := r.read(3 * MiB + 1):
            assert len(chunk) == min(3 * MiB + 1, len(data) - sum(map(len, got)))
            got.append(chunk)
        assert b"".join(got) == data
        assert r.read(10) == b""
    finally:
        r.close()


def test_overwrite_replaces(any_store: Store) -> None:
    any_store.put_bytes("k", b"one")
    any_store.put_bytes("k", b"two")
    assert any_store.get_bytes("k") == b"two"


def test_nothing_is_visible_before_commit(any_store: Store) -> None:
    w = any_store.open_writer("k")
    w.write(os.urandom(6 * MiB))  # more than a part: a multipart upload is under way on S3
    assert not any_store.exists("k")
    assert any_store.list("") == []
    w.commit()
    assert any_store.exists("k")


def test_exception_inside_with_aborts(any_store: Store) -> None:
    with pytest.raises(RuntimeError, match="task failed"):
        with any_store.open_writer("k") as w:
            w.write(os.urandom(11 * MiB))
            raise RuntimeError("task failed")
    assert not any_store.exists("k")
    assert any_store.list("") == []


def test_explicit_abort_and_misuse(any_store: Store) -> None:
    w = any_store.open_writer("k")
    w.write(b"x" * 100)
    w.abort()
    w.abort()
    assert not any_store.exists("k")
    with pytest.raises(StoreError):
        w.write(b"more")
    with pytest.raises(StoreError):
        w.commit()


def test_list_is_sorted_and_by_string_prefix(any_store: Store) -> None:
    for key in ["runs/b/x", "runs/a/2", "runs/a/1", "runs/ab/1", "deployments/v1/bundle.tar.zst", "top"]:
        any_store.put_bytes(key, key.encode())
    assert any_store.list("") == [
        "deployments/v1/bundle.tar.zst", "runs/a/1", "runs/a/2", "runs/ab/1", "runs/b/x", "top",
    ]  # fmt: skip
    assert any_store.list("runs/a/") == ["runs/a/1", "runs/a/2"]
    assert any_store.list("runs/a") == ["runs/a/1", "runs/a/2", "runs/ab/1"]
    assert any_store.list("runs/c/") == []
    assert any_store.list("nothing/here/") == []


def test_delete_and_delete_prefix(any_store: Store) -> None:
    for key in ["runs/r1/a", "runs/r1/b/c", "runs/r2/a"]:
        any_store.put_bytes(key, b"1")
    any_store.delete("runs/r1/a")
    any_store.delete("runs/r1/a")  # missing: not an error
    assert not any_store.exists("runs/r1/a")
    assert any_store.delete_prefix("runs/r1/") == 1
    assert any_store.list("") == ["runs/r2/a"]
    assert any_store.delete_prefix("runs/none/") == 0


def test_missing_key_is_not_found(any_store: Store) -> None:
    assert not any_store.exists("missing")
    with pytest.raises(NotFoundError, match="missing"):
        any_store.open_reader("missing")
    with pytest.raises(NotFoundError):
        any_store.size("missing")
    with pytest.raises(NotFoundError):
        any_store.get_bytes("runs/missing/manifest.json")


def test_progress_sums_to_the_object_size(any_store: Store) -> None:
    data = os.urandom(13 * MiB + 99)
    up: list[int] = []
    write_in_pieces(any_store, "obj", data, piece=MiB, progress=up.append)
    assert sum(up) == len(data) and all(n > 0 for n in up)
    down: list[int] = []
    r = any_store.open_reader("obj", progress=down.append)
    try:
        while r.read(MiB):
            pass
    finally:
        r.close()
    assert sum(down) == len(data)


def test_keys_may_not_escape(any_store: Store) -> None:
    for key in ["../x", "/abs", "a/../../x"]:
        with pytest.raises(ConfigError):
            any_store.put_bytes(key, b"x")
        with pytest.raises(ConfigError):
            any_store.open_reader(key)


def test_check_passes_on_a_usable_store(any_store: Store) -> None:
    any_store.check()
    assert any_store.list("") == []  # the probe is gone

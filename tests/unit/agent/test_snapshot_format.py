"""Sealed snapshots in a real directory store, without CRIU: format 3 end to end, and format 2 still read.

The CRIU side (a real task's memory, dump and restore) is in
tests/integration/agent/test_encrypted_snapshots.py.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import pytest

from torpor._errors import IntegrityError, MissingKeyError
from torpor._seal import SEGMENT_BYTES, TAG_BYTES, Kek, Keyring
from torpor.agent._manifest import Manifest, read_manifest
from torpor.agent._snapshot import upload_image
from torpor.agent._unpack import download_image, open_key
from torpor.store import open_store

HERE = Path(__file__).resolve().parent
SECRET = random.Random(11).randbytes(1 << 20)  # incompressible: zstd keeps it as it is, so only sealing hides it


@pytest.fixture
def store(tmp_path: Path):
    return open_store((tmp_path / "store").as_uri())


@pytest.fixture
def image(tmp_path: Path) -> Path:
    d = tmp_path / "image"
    d.mkdir()
    (d / "core-1.img").write_bytes(b"core " * 1000)
    # several sealed segments: 9 MB of random bytes compress to about as much
    (d / "pages-1.img").write_bytes(os.urandom(4 << 20) + SECRET + os.urandom(4 << 20) + b"\0" * (2 << 20))
    (d / "empty.img").write_bytes(b"")
    return d


def checkpoint(store, image: Path, keys: Keyring | None, run_id: str = "run-1", checkpoint_id: str = "ck-1") -> Manifest:
    return upload_image(store, image, keys=keys, run_id=run_id, checkpoint_id=checkpoint_id, kind="suspend",
                        criu_version="4.2", deployment_version="v1")


def same_files(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir())
    return names == sorted(p.name for p in b.iterdir()) and all((a / n).read_bytes() == (b / n).read_bytes()
                                                                 for n in names)


def test_a_sealed_snapshot_round_trips_and_hides_its_bytes(store, image, tmp_path):
    keys = Keyring(Kek.generate())
    m = checkpoint(store, image, keys)
    assert m.format == 3 and m.archive_key.endswith("/snapshot.sealed")
    assert m.encryption is not None and m.encryption.kek_id == keys.current.id
    assert m.encryption.cipher == "AES-256-GCM" and m.encryption.segment_bytes == SEGMENT_BYTES
    assert m.archive_sha256 is None  # the segments' tags authenticate it
    stored = store.get_bytes(m.archive_key)
    assert SECRET[:4096] not in stored and SECRET[-64:] not in stored
    assert len(stored) > 2 * (SEGMENT_BYTES + TAG_BYTES)  # more than one segment
    raw_manifest = store.get_bytes(m.key)
    assert keys.current.key.hex().encode() not in raw_manifest and keys.current.key not in raw_manifest
    assert read_manifest(store, m.key) == m
    download_image(store, m, tmp_path / "out", keys=keys)
    assert same_files(image, tmp_path / "out")


def test_an_older_key_in_the_ring_opens_what_it_sealed(store, image, tmp_path):
    old = Keyring(Kek.generate())
    m = checkpoint(store, image, old)
    rotated = Keyring(Kek.generate(), (old.current,))
    download_image(store, m, tmp_path / "out", keys=rotated)
    assert same_files(image, tmp_path / "out")


def refused(store, m: Manifest, keys, dest: Path, match: str) -> None:
    with pytest.raises(IntegrityError, match=match):
        download_image(store, m, dest, keys=keys)
    assert not dest.exists()  # nothing is left behind


def test_tampering_is_detected_like_corruption(store, image, tmp_path):
    keys = Keyring(Kek.generate())
    m = checkpoint(store, image, keys)
    good = store.get_bytes(m.archive_key)
    unit = SEGMENT_BYTES + TAG_BYTES
    segments = [good[i:i + unit] for i in range(0, len(good), unit)]
    assert len(segments) >= 3

    flipped = bytearray(good)
    flipped[unit + 100] ^= 0x01
    store.put_bytes(m.archive_key, bytes(flipped))
    refused(store, m, keys, tmp_path / "a", r"corrupt or was tampered with: segment 1 fails authentication")

    store.put_bytes(m.archive_key, b"".join(segments[:-1]))  # the last segment dropped
    refused(store, m, keys, tmp_path / "b", "truncated")

    store.put_bytes(m.archive_key, b"".join([segments[1], segments[0], *segments[2:]]))  # two swapped
    refused(store, m, keys, tmp_path / "c", "segment 0 fails authentication")

    store.put_bytes(m.archive_key, good)
    download_image(store, m, tmp_path / "ok", keys=keys)  # the original still opens


def test_a_missing_key_names_the_key_and_a_wrong_one_is_refused(store, image, tmp_path):
    keys = Keyring(Kek.generate())
    m = checkpoint(store, image, keys)
    other = Keyring(Kek.generate())
    with pytest.raises(MissingKeyError, match=rf"checkpoint ck-1 of run run-1 is encrypted with snapshot key "
                                              rf"{keys.current.id}, which was not given \(it has {other.current.id}\)"):
        download_image(store, m, tmp_path / "a", keys=other)
    with pytest.raises(MissingKeyError, match="it has none") as info:
        download_image(store, m, tmp_path / "b", keys=None)
    assert info.value.kek_id == keys.current.id
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()

    # A key file whose bytes differ but which claims the same id cannot exist (the id is the key's
    # fingerprint); what can happen is a wrapped key that was altered.
    raw = json.loads(store.get_bytes(m.key))
    wrapped = bytearray(raw["encryption"]["wrapped_key"].encode())
    wrapped[30] = ord("A") if wrapped[30] != ord("A") else ord("B")
    raw["encryption"]["wrapped_key"] = wrapped.decode()
    store.put_bytes(m.key, json.dumps(raw).encode())
    refused(store, read_manifest(store, m.key), keys, tmp_path / "c", "cannot be opened")


def test_a_snapshot_moved_under_another_checkpoint_does_not_open(store, image, tmp_path):
    """Someone with write access to the bucket copies checkpoint A's archive and key over checkpoint B's."""
    keys = Keyring(Kek.generate())
    a = checkpoint(store, image, keys, checkpoint_id="ck-a")
    b = checkpoint(store, image, keys, checkpoint_id="ck-b")
    forged = json.loads(store.get_bytes(b.key))
    forged["encryption"] = json.loads(store.get_bytes(a.key))["encryption"]
    store.put_bytes(b.archive_key, store.get_bytes(a.archive_key))
    forged["archive_sha256"], forged["archive_size"] = a.archive_sha256, a.archive_size
    store.put_bytes(b.key, json.dumps(forged).encode())
    refused(store, read_manifest(store, b.key), keys, tmp_path / "x", "another checkpoint")


def test_an_unencrypted_format_2_snapshot_from_before_still_reads(tmp_path):
    """A checkpoint written by torpor before encryption (format2_store/README.md) is read byte for byte."""
    root = tmp_path / "old"
    shutil.copytree(HERE / "format2_store", root)
    store = open_store(root.as_uri())
    m = read_manifest(store, "runs/run-v2/checkpoints/ck-v2/manifest.json")
    assert m.format == 2 and m.encryption is None and m.archive_key.endswith("/snapshot.zst")
    for keys in (None, Keyring(Kek.generate())):
        dest = tmp_path / f"out-{keys is None}"
        download_image(store, m, dest, keys=keys)
        assert (dest / "core-1.img").read_bytes() == b"core image of a task that predates encryption\n" * 3
        assert (dest / "pages-1.img").read_bytes() == random.Random(2).randbytes(5000) + b"\0" * 3000
    blob = bytearray(store.get_bytes(m.archive_key))
    blob[len(blob) // 2] ^= 0xFF
    store.put_bytes(m.archive_key, bytes(blob))
    refused(store, m, None, tmp_path / "bad", "corrupt")


def test_manifest_formats_and_their_encryption_section_agree(store, image):
    keys = Keyring(Kek.generate())
    m = checkpoint(store, image, keys)
    raw = json.loads(store.get_bytes(m.key))
    raw.pop("encryption")
    with pytest.raises(IntegrityError, match="lacks its encryption section"):
        Manifest.from_json(json.dumps(raw).encode(), key=m.key)
    raw["format"] = 4
    with pytest.raises(IntegrityError, match="format 4; this torpor reads formats 2, 3"):
        Manifest.from_json(json.dumps(raw).encode(), key=m.key)


def test_a_manifest_copied_to_another_checkpoint_is_refused(store, image):
    """What a checkpoint is comes from where it is stored: another run's (or checkpoint's) manifest and
    snapshot copied into its place are not restored in its stead."""
    keys = Keyring(Kek.generate())
    other = checkpoint(store, image, keys, run_id="run-2", checkpoint_id="ck-9")
    target = "runs/run-1/checkpoints/ck-1/manifest.json"
    store.put_bytes(target, store.get_bytes(other.key))
    with pytest.raises(IntegrityError, match="describes checkpoint ck-9 of run run-2: it was copied from elsewhere"):
        read_manifest(store, target)


def test_an_unencrypted_manifest_in_place_of_a_sealed_checkpoint_is_refused(store, image, tmp_path):
    """A downgrade: someone who can write to the store replaces a sealed checkpoint with an unencrypted
    (format 2) one of their making. The coordinator tells the restore which key the checkpoint was recorded
    under, and format 2 is refused for it."""
    keys = Keyring(Kek.generate())
    sealed = checkpoint(store, image, keys)
    forged = checkpoint(store, image, None)  # format 2, same run and checkpoint ids
    assert forged.key == sealed.key and forged.encryption is None
    m = read_manifest(store, sealed.key)
    with pytest.raises(IntegrityError, match=rf"recorded as sealed under snapshot key {keys.current.id}, but its "
                                             r"manifest is not encrypted: it was altered"):
        open_key(m, keys, sealed_under=keys.current.id)
    other = checkpoint(store, image, Keyring(Kek.generate()))
    with pytest.raises(IntegrityError, match=rf"but its manifest names {other.encryption.kek_id}"):
        open_key(read_manifest(store, other.key), keys, sealed_under=keys.current.id)
    # a checkpoint recorded before encryption (no key id) still takes format 2
    assert open_key(m, keys, sealed_under=None) is None

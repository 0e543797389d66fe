"""torpor._seal: the sealed segment stream, data-key wrapping, and key files (pure logic, no store)."""

from __future__ import annotations

import base64
import os
import random

import pytest

from torpor._errors import ConfigError, IntegrityError
from torpor._seal import (
    KEY_BYTES,
    TAG_BYTES,
    Kek,
    Keyring,
    Opener,
    Sealer,
    keyring_of,
    new_data_key,
    parse_key,
    read_key_file,
    unwrap,
    wrap,
)

SEG = 1000  # small segments, so a few KB make a many-segment stream


def seal(data: bytes, key: bytes, pieces: int = 7) -> list[bytes]:
    """Sealed segments of ``data``, fed to the sealer in uneven pieces as a compressor would."""
    s = Sealer(key, SEG)
    out: list[bytes] = []
    cuts = sorted(random.Random(len(data)).sample(range(1, len(data)), pieces - 1)) if len(data) > pieces else []
    for a, b in zip([0, *cuts], [*cuts, len(data)]):
        out += s.update(data[a:b])
    out.append(s.finish())
    return out


def open_all(stream: bytes, key: bytes, read: int = 777) -> bytes:
    o = Opener(key, SEG, what="test stream")
    plain = []
    for i in range(0, len(stream), read):
        plain += o.update(stream[i:i + read])
    plain.append(o.finish())
    return b"".join(plain)


@pytest.mark.parametrize("size", [0, 1, SEG - 1, SEG, SEG + 1, 3 * SEG, 10 * SEG + 17])
def test_round_trip_at_every_boundary(size: int) -> None:
    key = new_data_key()
    data = os.urandom(size)
    segments = seal(data, key)
    # every segment but the last is full; the last is shorter (possibly empty) and ends the stream
    assert all(len(s) == SEG + TAG_BYTES for s in segments[:-1])
    assert TAG_BYTES <= len(segments[-1]) < SEG + TAG_BYTES
    assert len(segments) == size // SEG + 1
    stream = b"".join(segments)
    assert open_all(stream, key) == data
    assert open_all(stream, key, read=len(stream) or 1) == data
    assert open_all(stream, key, read=SEG + TAG_BYTES) == data  # one stored segment at a time: no copies
    whole = Sealer(key, SEG)  # fed one segment at a time, as the compressor does
    fed = [s for i in range(0, size, SEG) for s in whole.update(data[i:i + SEG])] + [whole.finish()]
    assert open_all(b"".join(fed), key) == data
    if size >= 64:
        assert data[:64] not in stream  # the plaintext is not there


def test_a_changed_byte_is_detected_wherever_it_is() -> None:
    key = new_data_key()
    stream = b"".join(seal(os.urandom(4 * SEG + 300), key))
    for pos in (0, SEG // 2, SEG + TAG_BYTES - 1, 3 * (SEG + TAG_BYTES) + 5, len(stream) - 1):
        bad = bytearray(stream)
        bad[pos] ^= 0x01
        with pytest.raises(IntegrityError, match="fails authentication"):
            open_all(bytes(bad), key)


def test_a_dropped_last_segment_is_detected() -> None:
    key = new_data_key()
    segments = seal(os.urandom(3 * SEG + 5), key)
    with pytest.raises(IntegrityError, match="truncated"):
        open_all(b"".join(segments[:-1]), key)  # cut at a segment boundary: the end marker is missing
    with pytest.raises(IntegrityError, match="truncated"):
        open_all(b"", key)
    with pytest.raises(IntegrityError, match="fails authentication"):
        open_all(b"".join(segments)[:-5], key)  # cut inside the last segment


def test_a_stream_that_is_a_whole_number_of_segments_still_needs_its_end() -> None:
    key = new_data_key()
    segments = seal(os.urandom(2 * SEG), key)
    assert len(segments[-1]) == TAG_BYTES  # an empty final segment carries the end marker
    with pytest.raises(IntegrityError, match="truncated"):
        open_all(b"".join(segments[:-1]), key)


def test_swapped_segments_are_detected() -> None:
    key = new_data_key()
    segments = seal(os.urandom(4 * SEG + 10), key)
    segments[1], segments[2] = segments[2], segments[1]
    with pytest.raises(IntegrityError, match="segment 1 fails authentication"):
        open_all(b"".join(segments), key)


def test_a_full_segment_passed_off_as_the_last_is_detected() -> None:
    """Dropping the real end and padding nothing: the previous full segment is not marked final."""
    key = new_data_key()
    segments = seal(os.urandom(3 * SEG), key)
    o = Opener(key, SEG, what="test stream")
    o.update(b"".join(segments[:2]))
    o._buf += segments[2][:-1]  # noqa: SLF001 - a last segment one byte short of full
    with pytest.raises(IntegrityError):
        o.finish()


def test_segments_spliced_from_another_snapshot_are_detected() -> None:
    a, b = new_data_key(), new_data_key()
    sa = seal(os.urandom(3 * SEG + 1), a)
    sb = seal(os.urandom(3 * SEG + 1), b)
    with pytest.raises(IntegrityError, match="segment 1 fails authentication"):
        open_all(b"".join([sa[0], sb[1], sa[2], sa[3]]), a)


def test_data_after_the_end_is_detected() -> None:
    key = new_data_key()
    stream = b"".join(seal(os.urandom(SEG + 3), key))
    with pytest.raises(IntegrityError):
        open_all(stream + b"\x00" * 40, key)
    with pytest.raises(IntegrityError):
        open_all(stream + stream, key)


def test_a_wrong_data_key_is_detected() -> None:
    stream = b"".join(seal(os.urandom(2 * SEG), new_data_key()))
    with pytest.raises(IntegrityError, match="segment 0 fails authentication"):
        open_all(stream, new_data_key())


def test_an_absurd_segment_size_is_refused_before_any_buffering() -> None:
    with pytest.raises(IntegrityError, match="segment size"):
        Opener(new_data_key(), 1 << 40, what="x")


def test_a_wrapped_data_key_opens_only_with_its_kek_and_for_its_checkpoint() -> None:
    kek, other = Kek.generate(), Kek.generate()
    data_key = new_data_key()
    wrapped = wrap(kek, data_key, context="run-1/ck-1")
    assert base64.b64decode(wrapped).find(data_key) == -1
    assert unwrap(kek, wrapped, context="run-1/ck-1") == data_key
    with pytest.raises(IntegrityError, match="does not open"):
        unwrap(other, wrapped, context="run-1/ck-1")  # a wrong key
    with pytest.raises(IntegrityError, match="another checkpoint"):
        unwrap(kek, wrapped, context="run-1/ck-2")  # moved to another checkpoint's manifest
    blob = bytearray(base64.b64decode(wrapped))
    blob[20] ^= 1
    with pytest.raises(IntegrityError):
        unwrap(kek, base64.b64encode(bytes(blob)).decode(), context="run-1/ck-1")
    with pytest.raises(IntegrityError):
        unwrap(kek, "not base64!", context="run-1/ck-1")
    # each wrap has its own nonce
    assert wrap(kek, data_key, context="c") != wrap(kek, data_key, context="c")


def test_kek_ids_are_fingerprints_not_keys() -> None:
    k = Kek(bytes(range(32)))
    assert k.id == Kek(bytes(range(32))).id and k.id.startswith("kek-") and len(k.id) == 20
    assert k.id != Kek.generate().id
    assert k.key.hex() not in repr(k) and k.id in repr(k)
    with pytest.raises(ConfigError, match="32 bytes"):
        Kek(b"short")


def test_keyring_finds_current_and_older_keys() -> None:
    cur, old = Kek.generate(), Kek.generate()
    ring = Keyring(cur, (old,))
    assert ring.find(cur.id) is cur and ring.find(old.id) is old and ring.find("kek-0000") is None
    assert keyring_of((cur.id, cur.key), [(old.id, old.key), (cur.id, cur.key)]) == ring
    with pytest.raises(ConfigError, match="fingerprint"):
        keyring_of((old.id, cur.key))


def test_key_text_in_hex_or_base64() -> None:
    raw = os.urandom(KEY_BYTES)
    assert parse_key(raw.hex(), source="s").key == raw
    assert parse_key(" " + raw.hex().upper() + "\n", source="s").key == raw
    assert parse_key(base64.b64encode(raw).decode() + "\n", source="s").key == raw
    for bad in ["", "abc", raw.hex()[:-2], base64.b64encode(raw[:16]).decode(), "z" * 64]:
        with pytest.raises(ConfigError, match="does not hold a snapshot key.*head -c 32 /dev/urandom"):
            parse_key(bad, source="s")


def test_key_files_must_be_private(tmp_path) -> None:
    raw = os.urandom(KEY_BYTES)
    f = tmp_path / "snapshot.key"
    f.write_text(base64.b64encode(raw).decode() + "\n")
    for mode in (0o644, 0o640, 0o604, 0o660):
        f.chmod(mode)
        with pytest.raises(ConfigError, match=rf"mode {mode:04o}.*chmod 600"):
            read_key_file(f)
    for mode in (0o600, 0o400):
        f.chmod(mode)
        assert read_key_file(f).key == raw
    with pytest.raises(ConfigError, match="does not exist"):
        read_key_file(tmp_path / "nope")
    with pytest.raises(ConfigError, match="not a regular file"):
        read_key_file(tmp_path)

"""Snapshot encryption: AES-256-GCM over a stream of fixed-size segments, keys wrapped by a KEK.

A snapshot is a task's whole memory, secrets included, so every one is sealed
before it leaves the agent:

- a fresh random 256-bit **data key** per snapshot (per upload attempt, in
  fact), never stored in clear;
- the stored stream is cut into segments of ``segment_bytes`` of plaintext
  (the last one shorter, possibly empty), each sealed with AES-256-GCM under
  the data key. The nonce is the segment's index (unique under a key used for
  one stream only), and the authenticated data binds the index and whether
  the segment is the last one. So a changed byte, two segments swapped, a
  stream cut at a segment boundary (its last segment carries the end marker;
  every other segment is full-size and is not the last), a segment spliced
  in from another snapshot (another data key) are each detected;
- the data key is **wrapped** (AES-256-GCM, random nonce) by a key-encryption
  key (**KEK**) that the coordinator owns and hands to agents when they
  register. The wrap's authenticated data names the run and the checkpoint,
  so a manifest's wrapped key moved to another checkpoint does not open.

The manifest carries the wrapped key and the KEK's id: a fingerprint
(``kek-`` and 16 hex digits of a SHA-256 of the key), never the key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from torpor._errors import ConfigError, IntegrityError

CIPHER = "AES-256-GCM"
KEY_BYTES = 32
TAG_BYTES = 16
SEGMENT_BYTES = 4 << 20
"""Plaintext per sealed segment: large enough that the per-segment cost is nothing, small enough to stream."""
MAX_SEGMENT_BYTES = 64 << 20
"""A manifest asking for larger segments is refused (it would make a reader buffer that much)."""

_SEGMENT_AAD = b"torpor snapshot segment\x00"
_WRAP_AAD = b"torpor snapshot data key\x00"
_ID_DOMAIN = b"torpor snapshot kek id\x00"


def kek_id(key: bytes) -> str:
    """The public name of a KEK: a fingerprint that identifies it and reveals nothing of it."""
    return "kek-" + hashlib.sha256(_ID_DOMAIN + key).hexdigest()[:16]


@dataclass(frozen=True)
class Kek:
    """A key-encryption key: 32 random bytes and their fingerprint."""

    key: bytes = field(repr=False)
    id: str = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.key, bytes) or len(self.key) != KEY_BYTES:
            raise ConfigError(f"a snapshot key is {KEY_BYTES} bytes; got {len(self.key)}")
        object.__setattr__(self, "id", kek_id(self.key))

    @classmethod
    def generate(cls) -> "Kek":
        return cls(os.urandom(KEY_BYTES))


@dataclass(frozen=True)
class Keyring:
    """The KEK new snapshots are sealed with, and older ones kept to open snapshots sealed before a rotation."""

    current: Kek
    older: tuple[Kek, ...] = ()

    def find(self, wanted: str) -> Kek | None:
        for k in (self.current, *self.older):
            if k.id == wanted:
                return k
        return None

    @property
    def ids(self) -> list[str]:
        return [k.id for k in (self.current, *self.older)]


def keyring_of(current: tuple[str, bytes], older: Iterable[tuple[str, bytes]] = ()) -> Keyring:
    """A keyring from (id, key) pairs as they travel to agents; ConfigError if a key is not what its id says."""
    def kek(kid: str, key: bytes) -> Kek:
        k = Kek(bytes(key))
        if k.id != kid:
            raise ConfigError(f"snapshot key {kid!r} has the fingerprint {k.id}")
        return k

    cur = kek(*current)
    return Keyring(cur, tuple(k for k in (kek(*o) for o in older) if k.id != cur.id))


def parse_key(text: str, *, source: str) -> Kek:
    """A KEK written as 64 hex digits or as base64 of 32 bytes (whitespace around it ignored)."""
    s = text.strip()
    raw: bytes | None = None
    if len(s) == 2 * KEY_BYTES:
        try:
            raw = bytes.fromhex(s)
        except ValueError:
            raw = None
    if raw is None:
        try:
            raw = base64.b64decode(s, validate=True)
        except (binascii.Error, ValueError):
            raw = None
    if raw is None or len(raw) != KEY_BYTES:
        raise ConfigError(f"{source} does not hold a snapshot key: it must be {KEY_BYTES} random bytes written as "
                          f"{2 * KEY_BYTES} hex digits or in base64, e.g. made with: "
                          "(umask 077; head -c 32 /dev/urandom | base64 > FILE)")
    return Kek(raw)


def read_key_file(path: str | Path) -> Kek:
    """Read a KEK file; it must not be readable or writable by group or others (0600 or 0400)."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise ConfigError(f"snapshot key file {p} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read snapshot key file {p}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"snapshot key file {p} is not a regular file")
    if st.st_mode & 0o077:
        raise ConfigError(f"snapshot key file {p} has mode {stat.S_IMODE(st.st_mode):04o}: anyone who can read it can "
                          f"read every snapshot; make it readable by its owner only (chmod 600 {p})")
    try:
        text = p.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read snapshot key file {p}: {exc}") from None
    return parse_key(text, source=f"snapshot key file {p}")


# -- data keys -------------------------------------------------------------------


def new_data_key() -> bytes:
    return os.urandom(KEY_BYTES)


def wrap(kek: Kek, data_key: bytes, *, context: str) -> str:
    """The data key sealed under ``kek``, bound to ``context`` (run and checkpoint), as base64."""
    nonce = os.urandom(12)
    sealed = AESGCM(kek.key).encrypt(nonce, data_key, _WRAP_AAD + context.encode())
    return base64.b64encode(nonce + sealed).decode()


def unwrap(kek: Kek, wrapped: str, *, context: str) -> bytes:
    """Open a wrapped data key; IntegrityError if it was altered or belongs to another checkpoint."""
    try:
        blob = base64.b64decode(wrapped, validate=True)
        key = AESGCM(kek.key).decrypt(blob[:12], blob[12:], _WRAP_AAD + context.encode())
    except (InvalidTag, binascii.Error, ValueError):
        raise IntegrityError(f"its data key does not open with snapshot key {kek.id}: the manifest was altered or "
                             "belongs to another checkpoint") from None
    if len(key) != KEY_BYTES:
        raise IntegrityError(f"its data key has {len(key)} bytes, not {KEY_BYTES}")
    return key


# -- the segment stream ----------------------------------------------------------------


def _nonce(index: int) -> bytes:
    return b"\x00\x00\x00\x00" + struct.pack(">Q", index)


def _aad(index: int, final: bool) -> bytes:
    return _SEGMENT_AAD + struct.pack(">QB", index, 1 if final else 0)


def _take_whole(buf: bytearray, data: bytes | memoryview, unit: int,
                each: Callable[[memoryview], bytes]) -> list[bytes]:
    """``each`` of the whole ``unit``-sized pieces of ``buf`` followed by ``data``; the rest stays in ``buf``.

    With nothing pending, the pieces are taken from ``data`` itself: a writer or reader that hands over
    exactly one unit at a time (as the snapshot pipelines do) costs no copy at all.
    """
    if buf:
        buf += data
        whole = len(buf) // unit
        with memoryview(buf) as view:
            out = [each(view[i * unit:(i + 1) * unit]) for i in range(whole)]
        del buf[:whole * unit]
        return out
    whole = len(data) // unit
    with memoryview(data) as view:
        out = [each(view[i * unit:(i + 1) * unit]) for i in range(whole)]
        buf += view[whole * unit:]
    return out


class Sealer:
    """Turns a byte stream into sealed segments as it comes; ``finish()`` gives the last one.

    Every segment but the last holds exactly ``segment_bytes`` of plaintext;
    the last holds fewer (none when the stream is a whole number of segments)
    and is marked final, so a reader knows the end when it sees it.
    """

    def __init__(self, data_key: bytes, segment_bytes: int = SEGMENT_BYTES) -> None:
        self._aead = AESGCM(data_key)
        self._seg = segment_bytes
        self._buf = bytearray()
        self._index = 0
        self._finished = False

    def _seal(self, data: bytes | memoryview, final: bool) -> bytes:
        out = self._aead.encrypt(_nonce(self._index), data, _aad(self._index, final))
        self._index += 1
        return out

    def update(self, data: bytes | memoryview) -> list[bytes]:
        if self._finished:
            raise ValueError("the stream was finished")
        return _take_whole(self._buf, data, self._seg, lambda segment: self._seal(segment, False))

    def finish(self) -> bytes:
        if self._finished:
            raise ValueError("the stream was finished")
        self._finished = True
        last = self._seal(bytes(self._buf), True)
        self._buf = bytearray()
        return last


class Opener:
    """The reverse of ``Sealer``: authenticates and decrypts segments as ciphertext comes.

    Raises IntegrityError, prefixed with ``what``, on the first segment that
    fails authentication, and from ``finish()`` if the stream ends without its
    final segment.
    """

    def __init__(self, data_key: bytes, segment_bytes: int, *, what: str) -> None:
        if not 0 < segment_bytes <= MAX_SEGMENT_BYTES:
            raise IntegrityError(f"{what}: its manifest gives a segment size of {segment_bytes} bytes "
                                 f"(at most {MAX_SEGMENT_BYTES} are allowed)")
        self._aead = AESGCM(data_key)
        self.unit = segment_bytes + TAG_BYTES
        """Bytes of one stored segment: reading that many at a time costs no copy."""
        self._buf = bytearray()
        self._index = 0
        self._what = what
        self._finished = False

    def _open(self, data: bytes | memoryview, final: bool) -> bytes:
        try:
            out = self._aead.decrypt(_nonce(self._index), data, _aad(self._index, final))
        except InvalidTag:
            where = "its last segment" if final else f"segment {self._index}"
            raise IntegrityError(
                f"{self._what}: {where} fails authentication (altered, reordered, truncated, taken from another "
                "snapshot, or sealed under another key)") from None
        self._index += 1
        return out

    def update(self, data: bytes | memoryview) -> list[bytes]:
        if self._finished:
            raise IntegrityError(f"{self._what}: data after its last segment")
        return _take_whole(self._buf, data, self.unit, lambda segment: self._open(segment, False))

    def finish(self) -> bytes:
        """Open the last segment; the stream must end here."""
        if self._finished:
            return b""
        self._finished = True
        if len(self._buf) < TAG_BYTES:
            raise IntegrityError(f"{self._what}: it is truncated (it ends after {self._index} segments without "
                                 "its final one)")
        last = self._open(bytes(self._buf), True)
        self._buf = bytearray()
        return last

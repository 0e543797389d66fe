"""A checkpoint's manifest: what its archive holds and how to open it; written last.

Formats:

- 2: the archive (``snapshot.zst``) is the zstd-compressed record stream.
- 3: the archive (``snapshot.sealed``) is that same compressed stream sealed
  with AES-256-GCM (``torpor._seal``); ``encryption`` says with which key.

This torpor writes format 3 and reads both, so a run suspended by an older
torpor still restores.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from torpor._errors import IntegrityError, NotFoundError
from torpor.store import Store

MANIFEST_FORMAT = 3
READABLE_FORMATS = (2, 3)
MAGIC = b"TORPOR-SNAPSHOT-2\n"
"""First bytes of the (compressed) record stream, in both formats."""


def checkpoint_prefix(run_id: str, checkpoint_id: str) -> str:
    return f"runs/{run_id}/checkpoints/{checkpoint_id}"


def archive_key(run_id: str, checkpoint_id: str, *, sealed: bool = True) -> str:
    return f"{checkpoint_prefix(run_id, checkpoint_id)}/{'snapshot.sealed' if sealed else 'snapshot.zst'}"


def seal_context(run_id: str, checkpoint_id: str) -> str:
    """What a wrapped data key is bound to: it opens for this checkpoint only."""
    return f"{run_id}/{checkpoint_id}"


@dataclass(frozen=True, kw_only=True)
class FileEntry:
    name: str
    size: int


@dataclass(frozen=True, kw_only=True)
class Encryption:
    """How a format-3 archive is sealed (never the key itself)."""

    cipher: str
    """Always "AES-256-GCM"."""
    kek_id: str
    """Fingerprint of the key-encryption key that wrapped the data key."""
    wrapped_key: str
    """The snapshot's data key, sealed under that KEK and bound to this checkpoint (base64)."""
    segment_bytes: int
    """Plaintext bytes per sealed segment (the last one holds fewer)."""


@dataclass(frozen=True, kw_only=True)
class Manifest:
    checkpoint_id: str
    run_id: str
    kind: str
    """"suspend", "periodic" or "on_demand"."""
    created_at: str
    criu_version: str
    deployment_version: str
    parent: str | None
    archive_key: str
    archive_size: int
    archive_sha256: str | None
    """sha256 of the stored archive, for format 2; None for format 3, whose every segment carries an
    authentication tag instead (stronger, and cheaper to compute)."""
    raw_bytes: int
    files: list[FileEntry]
    dump_log_key: str | None = None
    timings_ms: dict[str, int] = field(default_factory=dict)
    encryption: Encryption | None = None
    """None for format 2 (written before snapshots were encrypted)."""
    network: str = ""
    """The run's network mode (egress, none, host; "" before it was recorded): a restore gets a fresh one."""
    format: int = MANIFEST_FORMAT

    @property
    def key(self) -> str:
        return f"{checkpoint_prefix(self.run_id, self.checkpoint_id)}/manifest.json"

    def to_json(self) -> bytes:
        raw = asdict(self)
        if self.encryption is None:
            raw.pop("encryption")
        return json.dumps(raw, indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, *, key: str) -> "Manifest":
        try:
            raw = json.loads(data)
            fmt = raw.get("format")
            if fmt not in READABLE_FORMATS:
                raise IntegrityError(f"manifest {key} has format {fmt!r}; this torpor reads formats "
                                     f"{', '.join(map(str, READABLE_FORMATS))}")
            raw["files"] = [FileEntry(**f) for f in raw["files"]]
            enc = raw.get("encryption")
            if (fmt >= 3) != (enc is not None):
                raise IntegrityError(f"manifest {key} (format {fmt}) "
                                     f"{'lacks its encryption section' if enc is None else 'has an encryption section'}")
            if enc is not None:
                raw["encryption"] = Encryption(**enc)
            manifest = cls(**raw)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise IntegrityError(f"manifest {key} is not a valid torpor manifest: {exc}") from exc
        if manifest.key != key:
            # What a checkpoint is (and what its data key is bound to) comes from where it is stored.
            raise IntegrityError(f"manifest {key} describes checkpoint {manifest.checkpoint_id} of run "
                                 f"{manifest.run_id}: it was copied from elsewhere; it will not be used")
        return manifest


def read_manifest(store: Store, key: str) -> Manifest:
    try:
        data = store.get_bytes(key)
    except NotFoundError as exc:
        raise NotFoundError(
            f"no checkpoint manifest at {key} in {store.url}: the checkpoint was never completed or was deleted"
        ) from exc
    return Manifest.from_json(data, key=key)

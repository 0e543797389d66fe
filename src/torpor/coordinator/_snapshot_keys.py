"""The snapshot keys a coordinator hands to agents: from a key file, or generated once and kept in Postgres.

- With ``--snapshot-key-file`` the file's key is current: agents seal new
  snapshots under it.
- Without, the key in the ``snapshot_key`` table is current; the first
  coordinator to start generates it (one row at most, so coordinators that
  start together agree on it).
- Decryption only: every ``--snapshot-old-key-file``, and the Postgres key when
  a key file is current, so a deployment that moves from the generated key to
  a key file, or from one key file to the next, strands no snapshot.

Keys are read once, at start: give every coordinator the same options, and
restart them to rotate (agents take the new keys when they register again).
"""

from __future__ import annotations

import logging

from torpor._seal import Kek, Keyring
from torpor.coordinator._db import Cursor, Database

log = logging.getLogger(__name__)


def stored_key(cur: Cursor, *, generate: bool = False) -> Kek | None:
    """The key kept in Postgres; with ``generate``, made first if there is none (the first caller's wins)."""
    if generate:
        fresh = Kek.generate()
        cur.execute("INSERT INTO snapshot_key (id, key) VALUES (%s, %s) ON CONFLICT (one) DO NOTHING",
                    (fresh.id, fresh.key))
    row = cur.execute("SELECT id, key FROM snapshot_key").fetchone()
    if row is None:
        return None
    kek = Kek(bytes(row["key"]))
    if kek.id != row["id"]:
        log.error("the snapshot key in Postgres has fingerprint %s, not the %s recorded beside it", kek.id, row["id"])
    return kek


def load_keyring(db: Database, *, key: Kek | None, old: tuple[Kek, ...] = ()) -> Keyring:
    """The keys to hand agents; with ``key`` None the Postgres key is current (generated if there is none)."""
    stored = db.run(stored_key, generate=key is None)
    if key is None:
        assert stored is not None
        current, older = stored, list(old)
        log.info("snapshots are sealed under key %s, kept in Postgres", current.id)
    else:
        current, older = key, [*old, *([stored] if stored is not None else [])]
        log.info("snapshots are sealed under key %s from --snapshot-key-file", current.id)
    unique: dict[str, Kek] = {}
    for k in older:
        if k.id != current.id:
            unique.setdefault(k.id, k)
    if unique:
        log.info("older snapshot keys, for decryption only: %s", ", ".join(unique))
    return Keyring(current, tuple(unique.values()))

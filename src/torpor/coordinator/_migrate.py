"""Ordered SQL migrations and the one-row version table.

``migrations/NNNN_name.sql`` are applied in number order; each one and its
version bump commit in one transaction, under an advisory lock so that two
coordinators starting together never apply one twice.
"""

from __future__ import annotations

import logging
import re
from importlib import resources

from torpor.coordinator._db import DatabaseError, connect_retrying

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_LOCK_KEY = 0x746F72706F72  # "torpor"


def migrations() -> list[tuple[int, str, str]]:
    """(number, file name, SQL) of every packaged migration, in order."""
    found = []
    for entry in resources.files("torpor.coordinator").joinpath("migrations").iterdir():
        m = _NAME.match(entry.name)
        if m:
            found.append((int(m.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    numbers = [n for n, _, _ in found]
    if numbers != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations must be numbered 1..N without gaps, found {numbers}")
    return found


def latest_version() -> int:
    return len(migrations())


def migrate(db_url: str) -> tuple[int, int]:
    """Bring the schema up to date; return (version before, version after)."""
    conn = connect_retrying(db_url, autocommit=True)
    try:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS torpor_schema_version ("
            " one boolean PRIMARY KEY DEFAULT true CHECK (one),"
            " version integer NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute("INSERT INTO torpor_schema_version (version) VALUES (0) ON CONFLICT DO NOTHING")
        row = conn.execute("SELECT version FROM torpor_schema_version").fetchone()
        before = current = row[0] if row else 0
        known = migrations()
        if current > len(known):
            raise DatabaseError(
                f"the database schema is at version {current}, newer than this torpor knows ({len(known)}): "
                "upgrade torpor before pointing it at this database"
            )
        for number, name, sql in known[current:]:
            with conn.transaction():
                conn.execute(sql)  # type: ignore[arg-type]  # trusted, packaged SQL
                conn.execute("UPDATE torpor_schema_version SET version = %s, applied_at = now()", (number,))
            log.info("applied migration %s", name)
            current = number
        return before, current
    finally:
        try:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
        finally:
            conn.close()


def schema_version(db_url: str) -> int:
    conn = connect_retrying(db_url, autocommit=True)
    try:
        row = conn.execute("SELECT to_regclass('torpor_schema_version')").fetchone()
        if not row or row[0] is None:
            return 0
        row = conn.execute("SELECT version FROM torpor_schema_version").fetchone()
        return row[0] if row else 0
    finally:
        conn.close()

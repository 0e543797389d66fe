"""The store sweeper: deletes checkpoint folders that no ``checkpoints`` row names.

The janitor deletes the folders of *released* checkpoints; it cannot know of
a folder no row names. Such orphans come from an agent that died mid-upload
(a ``snapshot.sealed`` without its manifest, a multipart upload or a temporary
file never finished), a failed dump (``dump.failed.log``), a snapshot whose
CheckpointRecorded never became a row (the run was gone), or a run deleted
with its rows. Every ``orphan_sweep_seconds`` one coordinator (a Postgres
advisory lock, so never two at once) lists ``runs/<run>/checkpoints/<id>/``
in the store in one pass, with the time of the newest object in each, and
deletes the folders that are older than ``orphan_grace_seconds`` and that no
row not yet deleted names by its location.

Why a folder old enough and named by no row will not be named later
--------------------------------------------------------------------
A CheckpointRecorded names a folder whose objects were all written before it
was sent (the manifest last, then the report), so the folder is at least as
old as the report. The agent keeps the report until it is acknowledged and
sends it again after any reconnect, so the report can still be in flight
long after the upload, but only in two ways:

* the agent cannot reach a coordinator (partition, hung process, dead host).
  While a coordinator runs, the agent's lease then lapses within
  ``lease_seconds``, its runs move on to a new generation, and the report,
  when it lands, is stale: it is recorded already released and the janitor
  deletes that folder anyway. Sweeping it first loses nothing.
* no coordinator can apply reports (all down, Postgres down or frozen). No
  sweep runs then either, and once the outage ends a coordinator sweeps only
  after its timer has reached the database without a gap for a whole
  ``orphan_grace_seconds``: by then every agent, whose lease was extended by a
  full lease after the outage, has reconnected and replayed its reports, or
  has been found lost (and its reports are stale, as above).

So the grace must exceed the agent's own delays: the longest snapshot upload
(an S3 object may carry the time its multipart upload *began*), plus a lease,
plus the replay of a backlog. The default hour is far above all of them. A
folder with an upload under way is never old: a partial write (an S3
multipart upload's newest part, a file store's temporary file) counts with
its own time. Just before each deletion the rows are asked again, so a report
applied since the listing keeps its folder.

If the argument fails anyway (a grace set too short), a recorded checkpoint
whose folder was swept is not restorable: the agent reports the restore as
``CommandFailed{bad_checkpoint_id}`` (a missing manifest or archive is a
NotFoundError), the coordinator releases that checkpoint and restores from the
next older one, or restarts the attempt, spending neither an attempt nor a
host failure. The run redoes work; it is never stuck.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import psycopg
from psycopg.rows import tuple_row

from torpor._errors import TorporError
from torpor.coordinator._db import Cursor, Database
from torpor.store import Store
from torpor.store._base import Folder

log = logging.getLogger(__name__)

AREA = "runs/"
"""Where snapshots live: ``runs/<run_id>/checkpoints/<checkpoint_id>/`` (agent/_snapshot.py)."""
_DEPTH = 3
_LOCK_KEY = int.from_bytes(hashlib.sha256(b"torpor-orphan-sweep").digest()[:8], "big", signed=True)
_QUERY_CHUNK = 1000


def folder_of(location: str) -> str:
    """The store folder of a checkpoint, from the key of its manifest."""
    return location.rsplit("/", 1)[0] + "/" if "/" in location else location


def checkpoint_folder(prefix: str) -> tuple[str, str] | None:
    """(run id, checkpoint id) of ``runs/<run_id>/checkpoints/<checkpoint_id>/``, else None."""
    if not prefix.startswith(AREA) or not prefix.endswith("/"):
        return None
    parts = prefix[len(AREA):-1].split("/")
    if len(parts) != _DEPTH or parts[1] != "checkpoints" or not parts[0] or not parts[2]:
        return None
    return parts[0], parts[2]


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """A checkpoint folder old enough to be swept if no row names it."""

    folder: Folder
    run_id: str
    checkpoint_id: str
    age: float
    """Seconds from its newest object to the listing."""


def old_checkpoint_folders(folders: Iterable[Folder], *, now: float, grace: float) -> list[Candidate]:
    """The checkpoint folders whose newest object (or partial write) is more than ``grace`` before ``now``."""
    found = []
    for f in folders:
        ids = checkpoint_folder(f.prefix)
        age = now - f.newest
        if ids is not None and age > grace:
            found.append(Candidate(folder=f, run_id=ids[0], checkpoint_id=ids[1], age=age))
    return found


def referenced_folders(cur: Cursor, run_ids: list[str]) -> set[str]:
    """The folders that rows of these runs name and that are not deleted yet.

    Looked up by run id (the primary key's first column): a checkpoint's
    location is always under its own run's folder. A row already deleted
    protects nothing: its folder was removed, anything there now came later.
    """
    found: set[str] = set()
    for start in range(0, len(run_ids), _QUERY_CHUNK):
        cur.execute("SELECT location FROM checkpoints WHERE run_id = ANY(%s) AND deleted_at IS NULL",
                    (run_ids[start:start + _QUERY_CHUNK],))
        found.update(folder_of(r["location"]) for r in cur.fetchall())
    return found


def orphans(candidates: Iterable[Candidate], referenced: set[str]) -> list[Candidate]:
    return [c for c in candidates if c.folder.prefix not in referenced]


@dataclass(frozen=True, kw_only=True)
class SweepResult:
    folders: int
    """Checkpoint folders and others listed under ``runs/``."""
    candidates: int
    """Those older than the grace."""
    swept: list[Candidate]
    """Deleted."""
    complete: bool
    """False when the store failed (listing, or part way): the rest waits for the next sweep."""


class Sweeper:
    """Sweeps orphaned checkpoint folders from ``store`` every ``every`` seconds, on a thread of its own.

    ``healthy_for`` tells how long the coordinator's timer has reached the
    database without a gap (None: not yet); the thread sweeps only once that
    is at least ``grace`` (see the module's docstring).
    """

    def __init__(self, db: Database, store: Store, *, every: float, grace: float,
                 healthy_for: Callable[[], float | None]) -> None:
        self._db = db
        self._store = store
        self._every = every
        self._grace = grace
        self._healthy_for = healthy_for
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="torpor-sweeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        # Coordinators started together should not all list the store at the same moment.
        delay = self._every * random.uniform(0.5, 1.0)
        while not self._stopped.wait(delay):
            delay = self._every
            healthy = self._healthy_for()
            if healthy is None or healthy < self._grace:
                log.debug("orphan sweep deferred: the database has been reachable without a gap for %s s, "
                          "less than the grace of %g s", "no" if healthy is None else f"{healthy:.0f}", self._grace)
                continue
            try:
                self.sweep()
            except TorporError as exc:  # the database is away (DatabaseError): next time
                log.warning("orphan sweep failed: %s; trying again in %g s", exc, self._every)
            except Exception:  # the thread must outlive any one sweep
                log.exception("orphan sweep failed; trying again in %g s", self._every)

    def sweep(self, *, now: float | None = None) -> SweepResult | None:
        """One sweep; None if another coordinator is sweeping.

        ``now`` (unix seconds) replaces the store's clock at the listing, for tests.
        The caller answers for the outage rule above; the thread keeps it.
        """
        with self._lock() as got:
            if not got:
                log.debug("orphan sweep skipped: another coordinator is sweeping")
                return None
            return self._sweep(now)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[bool]:
        """A session advisory lock on a connection held for the sweep, which may take a while.

        Not a transaction-scoped lock: that would keep a transaction open
        while the store is listed. If the connection dies, the lock goes with
        it, and at worst two coordinators sweep at once, which is harmless:
        both delete the same folders.
        """
        with self._db.pool.connection() as conn:
            cur = conn.cursor(row_factory=tuple_row)
            row = cur.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK_KEY,)).fetchone()
            conn.commit()
            if not row or not row[0]:
                yield False
                return
            try:
                yield True
            finally:
                try:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
                    conn.commit()
                except psycopg.Error:
                    conn.close()  # ends the session, and the lock with it; the pool drops the connection

    def _sweep(self, now: float | None) -> SweepResult | None:
        try:
            listing = self._store.folders(AREA, depth=_DEPTH)
        except TorporError as exc:  # a store that is down (StoreError): next time
            log.warning("orphan sweep: cannot list %s%s: %s; trying again in %g s",
                        self._store.url, AREA, exc, self._every)
            return SweepResult(folders=0, candidates=0, swept=[], complete=False)
        at = listing.listed_at if now is None else now
        candidates = old_checkpoint_folders(listing.folders, now=at, grace=self._grace)
        named = self._db.run(referenced_folders, sorted({c.run_id for c in candidates}))
        swept: list[Candidate] = []
        complete = True
        for c in orphans(candidates, named):
            # Asked again just before deleting: a report applied since the listing keeps its folder.
            if c.folder.prefix in self._db.run(referenced_folders, [c.run_id]):
                continue
            try:
                self._store.delete_prefix(c.folder.prefix, partial=True)
            except TorporError as exc:
                log.warning("orphan sweep: cannot delete %s%s: %s; trying again in %g s",
                            self._store.url, c.folder.prefix, exc, self._every)
                complete = False
                break
            swept.append(c)
            log.info("swept orphaned checkpoint folder %s (run %s): newest object %.0f s old, %d objects, "
                     "%d bytes, %d unfinished uploads", c.folder.prefix, c.run_id, c.age, c.folder.objects,
                     c.folder.size, c.folder.partial, extra={"run_id": c.run_id})
        if swept or not complete:
            log.info("orphan sweep: %d of %d checkpoint folders older than %g s were orphans and were deleted%s",
                     len(swept), len(candidates), self._grace, "" if complete else " before the store failed")
        return SweepResult(folders=len(listing.folders), candidates=len(candidates), swept=swept,
                           complete=complete)


"""The timer loop: every tick, each coordinator claims due work with SKIP LOCKED.

Due retries (RETRY_WAIT → QUEUED), due waitpoints (time, token timeouts),
expired agent leases (host lost), spent max_duration (TIMED_OUT), and now and
then the janitor: expired idempotency keys, released snapshots in the store.
Recovery only moves rows; starting anything is left to the scheduler, so a
duplicate recovery is harmless. The store sweeper (orphaned snapshots, see
_sweeper) runs on a thread of its own: listing a large bucket must not delay
a lease or a retry.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from torpor.coordinator import _lifecycle as life
from torpor.coordinator._db import Cursor, Database
from torpor.coordinator._states import ON_AGENT, RETRY_WAIT, lock_run, notify
from torpor.coordinator._sweeper import Sweeper, folder_of
from torpor.coordinator._waits import resolve_due
from torpor.store import Store

log = logging.getLogger(__name__)


def retries_due(cur: Cursor, limit: int = 200) -> int:
    cur.execute(
        "SELECT * FROM runs WHERE status = 'RETRY_WAIT' AND ready_at <= now() ORDER BY ready_at LIMIT %s"
        " FOR UPDATE SKIP LOCKED",
        (limit,),
    )
    rows = cur.fetchall()
    for run in rows:
        if run["status"] == RETRY_WAIT:
            life.retry_due(cur, run)
    if rows:
        notify(cur, "wake")
    return len(rows)


def extend_leases(cur: Cursor, lease: float) -> int:
    """Give every live agent a full lease from now: after an outage its heartbeats could not be recorded."""
    cur.execute(
        "UPDATE agents SET lease_expires_at = greatest(lease_expires_at, now() + make_interval(secs => %s))"
        " WHERE alive",
        (lease,),
    )
    return cur.rowcount


def leases_expired(cur: Cursor, max_failures: int) -> int:
    cur.execute(
        "SELECT name FROM agents WHERE alive AND lease_expires_at < now() LIMIT 50 FOR UPDATE SKIP LOCKED"
    )
    agents = [r["name"] for r in cur.fetchall()]
    for name in agents:
        cur.execute("UPDATE agents SET alive = false, coordinator_id = NULL WHERE name = %s", (name,))
        cur.execute("DELETE FROM agent_commands WHERE agent = %s", (name,))
        cur.execute(
            "SELECT id FROM runs WHERE agent = %s AND status IN ('STARTING', 'RUNNING', 'SUSPENDING', 'RESTORING')"
            " ORDER BY seq",
            (name,),
        )
        for row in cur.fetchall():
            run = lock_run(cur, row["id"])
            if run is not None and run["agent"] == name and run["status"] in ON_AGENT:
                life.host_failure(cur, run, f"agent {name} lost its lease", max_failures=max_failures)
        log.warning("agent %s lost its lease; its runs were moved", name)
    if agents:
        notify(cur, "wake")
    return len(agents)


def deadlines_passed(cur: Cursor, limit: int = 100) -> int:
    cur.execute(
        "SELECT * FROM runs WHERE exec_deadline <= now() AND status = 'RUNNING' ORDER BY exec_deadline LIMIT %s"
        " FOR UPDATE SKIP LOCKED",
        (limit,),
    )
    rows = cur.fetchall()
    for run in rows:
        life.timed_out(cur, run)
    if rows:
        notify(cur, "wake")
    return len(rows)


def expire_keys(cur: Cursor) -> int:
    cur.execute("DELETE FROM idempotency_keys WHERE expires_at <= now()")
    return cur.rowcount


def released_checkpoints(cur: Cursor, limit: int = 100) -> list[dict[str, Any]]:
    cur.execute(
        "SELECT run_id, id, location FROM checkpoints WHERE released_at IS NOT NULL AND deleted_at IS NULL"
        " ORDER BY released_at LIMIT %s FOR UPDATE SKIP LOCKED",
        (limit,),
    )
    return cur.fetchall()


def mark_deleted(cur: Cursor, run_id: str, checkpoint_id: str) -> None:
    cur.execute("UPDATE checkpoints SET deleted_at = now() WHERE run_id = %s AND id = %s", (run_id, checkpoint_id))


class Timers:
    def __init__(self, db: Database, *, tick: float, max_failures: int, store: Any | None,
                 kick_local: Callable[[], None], janitor_every: float = 5.0, lease: float = 15.0,
                 heartbeat: float = 5.0, orphan_sweep: float = 600.0, orphan_grace: float = 3600.0) -> None:
        self._db = db
        self._tick = tick
        self._max_failures = max_failures
        self._lease = lease
        # A gap this long between two ticks that reached the database means heartbeats may have gone unrecorded.
        self._outage = max(heartbeat, 4 * tick)
        self._last_ok: float | None = None  # monotonic end of the last tick that reached the database
        self._healthy_since: float | None = None  # since when ticks have reached it without such a gap
        self._store = store
        self._kick_local = kick_local
        self._janitor_every = janitor_every
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="torpor-timers", daemon=True)
        self.sweeper: Sweeper | None = None
        if isinstance(store, Store) and orphan_sweep > 0:
            self.sweeper = Sweeper(db, store, every=orphan_sweep, grace=orphan_grace, healthy_for=self.healthy_for)
            if orphan_grace < 2 * lease:
                log.warning("orphan_grace_seconds=%g is less than two leases (%g s): a snapshot whose report is "
                            "still on its way may be swept, and its run would fall back to an older checkpoint",
                            orphan_grace, 2 * lease)

    def start(self) -> None:
        self._thread.start()
        if self.sweeper is not None:
            self.sweeper.start()

    def stop(self) -> None:
        self._stopped.set()
        if self.sweeper is not None:
            self.sweeper.stop()
        self._thread.join(timeout=5)

    def healthy_for(self) -> float | None:
        """Seconds this coordinator's ticks have reached the database without an outage gap; None before the first."""
        if self._healthy_since is None or self._last_ok is None:
            return None
        if time.monotonic() - self._last_ok > self._outage:
            return None  # in a gap right now
        return time.monotonic() - self._healthy_since

    def tick(self) -> None:
        self._db.run(retries_due)
        while self._db.run(resolve_due) >= 200:
            pass
        self._leases()
        self._db.run(deadlines_passed)
        now = time.monotonic()
        if self._last_ok is None or now - self._last_ok > self._outage:
            self._healthy_since = now
        self._last_ok = now

    def _leases(self) -> None:
        """Expire lapsed leases, unless this coordinator has just started or just got the database back.

        Either way agents may have heartbeated without effect (no database to
        record it, no coordinator to take it), so first every lease is extended
        by a full period: an outage of any length never makes a host lost by
        itself. The gap is measured after a statement has come back, so a
        database frozen before this tick's transaction began counts too.
        """
        def work(cur: Cursor) -> int:
            cur.execute("SELECT 1")
            gap = None if self._last_ok is None else time.monotonic() - self._last_ok
            if gap is None or gap > self._outage:
                n = extend_leases(cur, self._lease)
                log.log(logging.WARNING if gap is not None and gap > self._lease else logging.INFO,
                        "%s: the leases of %d live agent(s) extended by %gs before any may expire",
                        "coordinator started" if gap is None else f"no tick reached the database for {gap:.1f}s",
                        n, self._lease)
                return 0
            return leases_expired(cur, self._max_failures)

        self._db.run(work)

    def janitor(self) -> None:
        self._db.run(expire_keys)
        if self._store is None:
            return
        for row in self._db.run(released_checkpoints):
            try:
                self._store.delete_prefix(folder_of(row["location"]))
            except Exception as exc:  # the store is down: try again next time
                log.warning("could not delete released checkpoint %s of %s: %s", row["id"], row["run_id"], exc)
                return
            self._db.run(mark_deleted, row["run_id"], row["id"])

    def _loop(self) -> None:
        next_janitor = time.monotonic() + self._janitor_every
        while not self._stopped.wait(self._tick):
            try:
                self.tick()
                self._kick_local()
                if time.monotonic() >= next_janitor:
                    next_janitor = time.monotonic() + self._janitor_every
                    self.janitor()
            except Exception:
                log.exception("timer tick failed")


"""The run state machine: which moves are legal, and the one function that makes them.

Every transition is an ``UPDATE ... WHERE status = ANY(<states it may leave>)``
inside the caller's transaction, with an event row and a notification, so a
move that lost a race (another coordinator, a late agent message) fails its
check and changes nothing.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

from torpor._errors import ErrorCode, TorporError
from torpor.coordinator._db import Cursor

QUEUED = "QUEUED"
STARTING = "STARTING"
RUNNING = "RUNNING"
SUSPENDING = "SUSPENDING"
SUSPENDED = "SUSPENDED"
RESTORING = "RESTORING"
RETRY_WAIT = "RETRY_WAIT"
COMPLETED = "COMPLETED"
FAILED = "FAILED"
CANCELED = "CANCELED"
TIMED_OUT = "TIMED_OUT"
CRASHED = "CRASHED"
OUT_OF_MEMORY = "OUT_OF_MEMORY"

TERMINAL = frozenset({COMPLETED, FAILED, CANCELED, TIMED_OUT, CRASHED, OUT_OF_MEMORY})
NON_TERMINAL = frozenset({QUEUED, STARTING, RUNNING, SUSPENDING, SUSPENDED, RESTORING, RETRY_WAIT})
# States in which a run is (or is being put) on an agent, when its agent column is set.
ON_AGENT = frozenset({STARTING, RUNNING, SUSPENDING, RESTORING})

# to-state -> the states a run may leave to reach it.
ALLOWED: dict[str, frozenset[str]] = {
    # new attempt after backoff; or the same attempt again after a host failure with no checkpoint
    QUEUED: frozenset({RETRY_WAIT, STARTING, RUNNING, SUSPENDING, RESTORING}),
    STARTING: frozenset({QUEUED}),
    # started; restored; woken in place before the dump
    RUNNING: frozenset({STARTING, RESTORING, SUSPENDING}),
    SUSPENDING: frozenset({RUNNING}),
    SUSPENDED: frozenset({SUSPENDING}),
    # waitpoint resolved; host lost with a checkpoint; restore refused (try another host)
    RESTORING: frozenset({SUSPENDED, RUNNING, SUSPENDING, RESTORING}),
    RETRY_WAIT: frozenset({STARTING, RUNNING, SUSPENDING}),
    COMPLETED: frozenset({STARTING, RUNNING}),
    FAILED: frozenset({STARTING, RUNNING, SUSPENDING}),
    TIMED_OUT: frozenset({RUNNING, SUSPENDING}),
    OUT_OF_MEMORY: frozenset({STARTING, RUNNING, SUSPENDING}),
    CRASHED: frozenset({STARTING, RUNNING, SUSPENDING, SUSPENDED, RESTORING, QUEUED}),
    CANCELED: NON_TERMINAL,
}


class TransitionError(TorporError):
    """A run is not in a state it may leave for the requested one."""

    code = ErrorCode.FAILED_PRECONDITION

    def __init__(self, run_id: str, current: str | None, target: str) -> None:
        if current is None:
            super().__init__(f"run {run_id} does not exist", code=ErrorCode.NOT_FOUND)
        else:
            allowed = ", ".join(sorted(ALLOWED[target]))
            super().__init__(f"run {run_id} is {current}; it cannot become {target} (only from {allowed})")
        self.run_id = run_id
        self.current = current
        self.target = target


def transition(
    cur: Cursor,
    run_id: str,
    target: str,
    *,
    event: str,
    detail: str = "",
    only_from: frozenset[str] | set[str] | None = None,
    generation: int | None = None,
    event_agent: str | None = None,
    ref: str | None = None,
    **sets: Any,
) -> dict[str, Any]:
    """Move ``run_id`` to ``target`` and set columns ``sets``; return the updated row.

    ``only_from`` narrows the legal source states; ``generation`` additionally
    requires the run to still be at that generation (fencing). Raises
    TransitionError, changing nothing, when the run is elsewhere.
    """
    sources = ALLOWED[target] if only_from is None else ALLOWED[target] & frozenset(only_from)
    assignments = [sql.SQL("status = %(target)s"), sql.SQL("updated_at = now()")]
    params: dict[str, Any] = {"target": target, "id": run_id, "sources": sorted(sources)}
    if target in TERMINAL:
        assignments.append(sql.SQL("finished_at = now()"))
        assignments.append(sql.SQL("exec_deadline = NULL"))
    for column, value in sets.items():
        if isinstance(value, sql.Composable):
            assignments.append(sql.SQL("{} = ").format(sql.Identifier(column)) + value)
        else:
            assignments.append(sql.SQL("{} = {}").format(sql.Identifier(column), sql.Placeholder(column)))
            params[column] = value
    where = sql.SQL("id = %(id)s AND status = ANY(%(sources)s)")
    if generation is not None:
        where += sql.SQL(" AND generation = %(generation)s")
        params["generation"] = generation
    cur.execute(
        sql.SQL("UPDATE runs SET {} WHERE {} RETURNING *").format(sql.SQL(", ").join(assignments), where),
        params,
    )
    row = cur.fetchone()
    if row is None:
        cur.execute("SELECT status FROM runs WHERE id = %s", (run_id,))
        found = cur.fetchone()
        raise TransitionError(run_id, found["status"] if found else None, target)
    add_event(cur, row, event, detail, agent=event_agent or row.get("agent"), ref=ref)
    notify_run(cur, run_id)
    return row


def add_event(cur: Cursor, run: dict[str, Any], type_: str, detail: str = "", *, agent: str | None = None, ref: str | None = None) -> None:
    cur.execute(
        "INSERT INTO run_events (run_id, type, detail, agent, attempt, ref) VALUES (%s, %s, %s, %s, %s, %s)",
        (run["id"], type_, detail, agent, run["attempt"], ref),
    )


def notify_run(cur: Cursor, run_id: str) -> None:
    cur.execute("SELECT pg_notify('torpor', %s)", ("run:" + run_id,))


def notify(cur: Cursor, payload: str) -> None:
    cur.execute("SELECT pg_notify('torpor', %s)", (payload,))


def lock_run(cur: Cursor, run_id: str) -> dict[str, Any] | None:
    cur.execute("SELECT * FROM runs WHERE id = %s FOR UPDATE", (run_id,))
    return cur.fetchone()

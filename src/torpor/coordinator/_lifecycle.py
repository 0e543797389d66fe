"""What happens to a run when an attempt ends, a host is lost, a deadline passes, or a user cancels.

Each function runs inside the caller's transaction with the run row locked
(``lock_run``) and moves it through ``transition``.
"""

from __future__ import annotations

import logging
from typing import Any

from psycopg import sql

from torpor.coordinator import _outbox
from torpor.coordinator._db import Cursor
from torpor.coordinator._states import (
    CANCELED,
    COMPLETED,
    CRASHED,
    NON_TERMINAL,
    ON_AGENT,
    QUEUED,
    RESTORING,
    RETRY_WAIT,
    RUNNING,
    SUSPENDED,
    SUSPENDING,
    TERMINAL,
    TIMED_OUT,
    TransitionError,
    add_event,
    lock_run,
    notify,
    transition,
)
from torpor.coordinator._triggers import retry_delay

log = logging.getLogger(__name__)

NOW = sql.SQL("now()")
# Execution time of the attempt so far, counting the RUNNING stretch that is ending now.
EXEC_SO_FAR = sql.SQL(
    "exec_seconds + COALESCE(EXTRACT(EPOCH FROM (now() - exec_started_at))::float8, 0)"
)


def _fmt(seconds: float) -> str:
    return f"{seconds:.3g}s"


def close_attempt(cur: Cursor, run: dict[str, Any], status: str, error: str | None = None, traceback: str | None = None) -> None:
    cur.execute(
        "UPDATE attempts SET status = %s, error = %s, traceback = %s, finished_at = now()"
        " WHERE run_id = %s AND number = %s AND finished_at IS NULL",
        (status, error, traceback, run["id"], run["attempt"]),
    )


def complete(cur: Cursor, run: dict[str, Any], output_json: str) -> dict[str, Any]:
    row = transition(cur, run["id"], COMPLETED, event="completed", generation=run["generation"],
                     output_json=output_json or "null", error=None, traceback=None)
    close_attempt(cur, row, COMPLETED)
    after_terminal(cur, row)
    return row


def attempt_failed(cur: Cursor, run: dict[str, Any], *, error: str, traceback: str | None, final: str, event: str,
                   retry: bool = True) -> dict[str, Any]:
    """The task failed this attempt (exception, timeout, crash): retry per its policy or finish as ``final``."""
    close_attempt(cur, run, final, error, traceback)
    if retry and run["attempt"] < run["max_attempts"]:
        delay = retry_delay(run["attempt"], run["retry_factor"], run["retry_min"], run["retry_max"], run["retry_randomize"])
        return transition(
            cur, run["id"], RETRY_WAIT, event=event,
            detail=f"attempt {run['attempt']} of {run['max_attempts']}: {error}; next attempt in {_fmt(delay)}",
            generation=run["generation"], error=error, traceback=traceback,
            ready_at=sql.SQL("now() + make_interval(secs => {})").format(sql.Literal(delay)),
            exec_started_at=None, exec_deadline=None, waiting_on=None,
        )
    row = transition(cur, run["id"], final, event=event,
                     detail=f"attempt {run['attempt']} of {run['max_attempts']} (the last): {error}",
                     generation=run["generation"], error=error, traceback=traceback)
    after_terminal(cur, row)
    return row


def retry_due(cur: Cursor, run: dict[str, Any]) -> dict[str, Any]:
    """RETRY_WAIT → QUEUED as a new attempt in a fresh process."""
    release_checkpoints(cur, run["id"])
    return transition(cur, run["id"], QUEUED, event="retrying", detail=f"attempt {run['attempt'] + 1}",
                      only_from={RETRY_WAIT}, attempt=run["attempt"] + 1, exec_seconds=0.0, host_failures=0,
                      agent=None, ready_at=NOW)


def latest_checkpoint(cur: Cursor, run: dict[str, Any]) -> dict[str, Any] | None:
    cur.execute(
        "SELECT * FROM checkpoints WHERE run_id = %s AND attempt = %s AND released_at IS NULL"
        " ORDER BY created_at DESC, generation DESC LIMIT 1",
        (run["id"], run["attempt"]),
    )
    return cur.fetchone()


def checkpoint_unusable(cur: Cursor, run: dict[str, Any], checkpoint_id: str, why: str, *,
                        max_failures: int) -> dict[str, Any]:
    """A restore failed because of its checkpoint: release it and restore from the next older one.

    Neither an attempt nor a host failure is spent (the host did nothing
    wrong); every fallback consumes a checkpoint, so this ends, at worst in a
    restart of the attempt when none is left.
    """
    cur.execute("UPDATE checkpoints SET released_at = now() WHERE run_id = %s AND id = %s AND released_at IS NULL",
                (run["id"], checkpoint_id))
    add_event(cur, run, "checkpoint_unusable", f"checkpoint {checkpoint_id}: {why}; falling back to an older one",
              agent=run["agent"])
    return host_failure(cur, run, f"checkpoint {checkpoint_id} cannot be restored", max_failures=max_failures,
                        spend=False, event="restore_fallback")


def host_failure(cur: Cursor, run: dict[str, Any], why: str, *, max_failures: int,
                 spend: bool = True, pause: float = 0.0, event: str = "host_lost") -> dict[str, Any]:
    """Not the task's failure: restore from the latest checkpoint, or restart the attempt; no attempt is spent.

    ``pause``: seconds before the run may be placed again (the store was down). ``event``: the timeline's
    name for it ("host_lost" when a host failure is spent, something else when nothing was lost).
    """
    failures = run["host_failures"] + (1 if spend else 0)
    if failures > max_failures:
        error = f"{why}; gave up after {max_failures} host failures in attempt {run['attempt']}"
        close_attempt(cur, run, CRASHED, error)
        row = transition(cur, run["id"], CRASHED, event="crashed", detail=error, error=error,
                         generation=run["generation"], host_failures=failures)
        after_terminal(cur, row)
        return row
    ckpt = latest_checkpoint(cur, run)
    common: dict[str, Any] = {"generation": run["generation"], "host_failures": failures, "agent": None,
                              "event_agent": run["agent"],
                              "exec_started_at": None, "exec_deadline": None,
                              "ready_at": NOW if not pause else sql.SQL("now() + make_interval(secs => {})").format(
                                  sql.Literal(pause))}
    if run["status"] == SUSPENDING and ckpt and ckpt["kind"] == "SUSPEND" and ckpt["wait_id"] == run["waiting_on"]:
        # The dump was durable before the host went: the run is simply suspended.
        return suspended(cur, run, detail=f"{why}; the suspend checkpoint {ckpt['id']} was complete")
    if ckpt is not None:
        return transition(cur, run["id"], RESTORING, event=event,
                          detail=f"{why}; restoring from checkpoint {ckpt['id']}",
                          only_from={RUNNING, SUSPENDING, RESTORING},
                          exec_seconds=EXEC_SO_FAR if run["status"] == RUNNING else run["exec_seconds"],
                          waiting_on=ckpt["wait_id"], **common)
    return transition(cur, run["id"], QUEUED, event=event,
                      detail=f"{why}; no checkpoint, restarting attempt {run['attempt']}",
                      exec_seconds=0.0, waiting_on=None, **common)


def suspended(cur: Cursor, run: dict[str, Any], *, detail: str = "") -> dict[str, Any]:
    """SUSPENDING → SUSPENDED once the dump is durable; straight on to RESTORING if the wait is already over."""
    row = transition(cur, run["id"], SUSPENDED, event="suspended", detail=detail or f"waiting on {run['waiting_on']}",
                     generation=run["generation"], agent=None, event_agent=run["agent"], exec_started_at=None,
                     exec_deadline=None)
    cur.execute(
        "SELECT resolved_at FROM waitpoints WHERE run_id = %s AND attempt = %s AND wait_id = %s",
        (run["id"], run["attempt"], run["waiting_on"]),
    )
    wp = cur.fetchone()
    if wp is not None and wp["resolved_at"] is not None:
        row = to_restore(cur, row, "the wait was resolved during the dump")
    return row


def to_restore(cur: Cursor, run: dict[str, Any], detail: str) -> dict[str, Any]:
    row = transition(cur, run["id"], RESTORING, event="restore_queued", detail=detail, only_from={SUSPENDED},
                     agent=None, ready_at=NOW)
    notify(cur, "wake")
    return row


def timed_out(cur: Cursor, run: dict[str, Any]) -> dict[str, Any]:
    _outbox.kill(cur, run["agent"], run["id"], run["generation"], "timed_out")
    return attempt_failed(cur, run, error=f"exceeded max_duration of {_fmt(run['max_duration'])} of execution",
                          traceback=None, final=TIMED_OUT, event="timed_out")


def cancel(cur: Cursor, run_id: str) -> dict[str, Any]:
    """Cancel a run and every unfinished descendant; kill what is on an agent."""
    run = lock_run(cur, run_id)
    if run is None or run["status"] in TERMINAL:
        raise TransitionError(run_id, run["status"] if run else None, CANCELED)
    cur.execute(
        "WITH RECURSIVE d(id) AS (SELECT id FROM runs WHERE parent_run_id = %s"
        " UNION SELECT r.id FROM runs r JOIN d ON r.parent_run_id = d.id)"
        " SELECT r.id FROM runs r JOIN d USING (id) WHERE r.status = ANY(%s) ORDER BY r.seq",
        (run_id, sorted(NON_TERMINAL)),
    )
    children = [r["id"] for r in cur.fetchall()]
    result = _cancel_one(cur, run, "canceled by request")
    for child_id in children:
        child = lock_run(cur, child_id)
        if child is not None and child["status"] in NON_TERMINAL:
            _cancel_one(cur, child, f"parent {run_id} was canceled")
    return result


def _cancel_one(cur: Cursor, run: dict[str, Any], detail: str) -> dict[str, Any]:
    if run["status"] in ON_AGENT:
        _outbox.kill(cur, run["agent"], run["id"], run["generation"], "canceled")
    close_attempt(cur, run, CANCELED, detail)
    row = transition(cur, run["id"], CANCELED, event="canceled", detail=detail, error=detail,
                     exec_started_at=None)
    after_terminal(cur, row)
    return row


def release_checkpoints(cur: Cursor, run_id: str) -> None:
    """Snapshots the run can no longer be restored from: the janitor deletes them from the store."""
    cur.execute("UPDATE checkpoints SET released_at = now() WHERE run_id = %s AND released_at IS NULL", (run_id,))


def keep_newest_checkpoints(cur: Cursor, run: dict[str, Any], keep: int) -> None:
    """Release all but the ``keep`` newest checkpoints of the run's current attempt.

    Called as a checkpoint is recorded, so only a running run's are released:
    its container is live, no restore is reading any of them, and the newest
    ``keep`` stay for a restore to fall back on.
    """
    cur.execute(
        "UPDATE checkpoints SET released_at = now() WHERE run_id = %(run)s AND attempt = %(attempt)s"
        " AND released_at IS NULL AND id NOT IN (SELECT id FROM checkpoints WHERE run_id = %(run)s"
        " AND attempt = %(attempt)s AND released_at IS NULL ORDER BY created_at DESC, generation DESC LIMIT %(keep)s)",
        {"run": run["id"], "attempt": run["attempt"], "keep": max(1, keep)},
    )


def after_terminal(cur: Cursor, run: dict[str, Any]) -> None:
    release_checkpoints(cur, run["id"])
    cur.execute("UPDATE waitpoints SET resolved_at = now(), result_json = 'null' WHERE run_id = %s AND resolved_at IS NULL",
                (run["id"],))
    if run["parent_run_id"]:
        from torpor.coordinator._waits import child_finished

        child_finished(cur, run)


"""Waitpoints (time, token, children) and tokens, as rows; resolving them wakes runs.

A resolved waitpoint of a SUSPENDED run sends it to RESTORING (the scheduler
picks a host); a run still RUNNING/SUSPENDING on its agent gets WaitResolved
instead, and the agent wakes it in place or, if the dump already finished,
reports it suspended and it is restored with the result.
"""

from __future__ import annotations

import json
from typing import Any

from torpor._errors import ConfigError, ErrorCode, NotFoundError, TorporError
from torpor._proto.v1 import agent_pb2
from torpor.coordinator import _outbox
from torpor.coordinator._db import Cursor
from torpor.coordinator._lifecycle import EXEC_SO_FAR, to_restore
from torpor.coordinator._states import (
    RUNNING,
    SUSPENDED,
    SUSPENDING,
    TERMINAL,
    add_event,
    lock_run,
    notify_run,
    transition,
)


def wait_resolved_message(run: dict[str, Any], wp: dict[str, Any]) -> agent_pb2.CoordinatorMessage:
    return agent_pb2.CoordinatorMessage(wait_resolved=wake_of(run, wp))


def wake_of(run: dict[str, Any], wp: dict[str, Any]) -> agent_pb2.WaitResolved:
    return agent_pb2.WaitResolved(
        run=agent_pb2.RunRef(run_id=run["id"], generation=run["generation"]),
        wait_id=wp["wait_id"], result_json=wp["result_json"] or "null", timed_out=wp["timed_out"],
    )


def request_wait(cur: Cursor, run: dict[str, Any], msg: agent_pb2.WaitRequested) -> dict[str, Any]:
    """Record the waitpoint of a RUNNING run; answer WaitResolved now, or SuspendRun to go ahead and dump."""
    if not msg.wait_id:
        raise ConfigError("wait_id is required")
    kind = msg.WhichOneof("kind")
    due_sql, token_id, children = None, None, None
    if kind == "until_unix":
        due_sql = msg.until_unix
    elif kind == "token":
        token_id = msg.token.token_id
        if not token_id:
            raise ConfigError("token wait without a token_id")
        due_sql = msg.token.timeout_unix or None
        register_token(cur, run, token_id, msg.token.timeout_unix)
    elif kind == "children":
        children = list(msg.children.run_ids)
    else:
        raise ConfigError("WaitRequested needs one of until_unix, token, children")
    cur.execute(
        "INSERT INTO waitpoints (run_id, attempt, wait_id, kind, due_at, token_id, child_ids)"
        " VALUES (%s, %s, %s, %s, to_timestamp(%s), %s, %s)"
        " ON CONFLICT (run_id, attempt, wait_id) DO UPDATE SET kind = waitpoints.kind RETURNING *",
        (run["id"], run["attempt"], msg.wait_id, {"until_unix": "time"}.get(kind, kind), due_sql, token_id, children),
    )
    wp = cur.fetchone()
    assert wp is not None
    if wp["resolved_at"] is None:
        wp = _resolve_if_ready(cur, wp) or wp
    if wp["resolved_at"] is not None:
        add_event(cur, run, "wait_resolved", f"{wp['kind']} wait {wp['wait_id']} was already over", agent=run["agent"])
        _outbox.enqueue(cur, run["agent"], wait_resolved_message(run, wp))
        return run
    row = transition(cur, run["id"], SUSPENDING, event="waiting", detail=_describe(wp), generation=run["generation"],
                     waiting_on=msg.wait_id, exec_seconds=EXEC_SO_FAR, exec_started_at=None, exec_deadline=None)
    _outbox.enqueue(cur, run["agent"], agent_pb2.CoordinatorMessage(
        suspend=agent_pb2.SuspendRun(run=agent_pb2.RunRef(run_id=run["id"], generation=run["generation"]),
                                     wait_id=msg.wait_id)))
    return row


def _describe(wp: dict[str, Any]) -> str:
    if wp["kind"] == "time":
        return f"time wait {wp['wait_id']} until {wp['due_at']:%Y-%m-%d %H:%M:%S}Z"
    if wp["kind"] == "token":
        return f"token wait {wp['wait_id']} on {wp['token_id']}"
    return f"children wait {wp['wait_id']} on {len(wp['child_ids'] or [])} run(s)"


def _resolve_if_ready(cur: Cursor, wp: dict[str, Any]) -> dict[str, Any] | None:
    if wp["kind"] == "time":
        cur.execute("SELECT %s <= now() AS due", (wp["due_at"],))
        row = cur.fetchone()
        if row and row["due"]:
            return _mark(cur, wp, "null", False)
    elif wp["kind"] == "token":
        cur.execute("SELECT completed_at, data_json, timeout_at <= now() AS expired FROM tokens WHERE id = %s",
                    (wp["token_id"],))
        tok = cur.fetchone()
        if tok and tok["completed_at"] is not None:
            return _mark(cur, wp, tok["data_json"] or "null", False)
        if tok and tok["expired"]:
            return _mark(cur, wp, "null", True)
    else:
        result = _children_result(cur, wp["child_ids"] or [])
        if result is not None:
            return _mark(cur, wp, result, False)
    return None


def _children_result(cur: Cursor, child_ids: list[str]) -> str | None:
    """The children's outcomes as JSON once every one of them has finished, else None."""
    cur.execute("SELECT id, status, output_json, error FROM runs WHERE id = ANY(%s)", (child_ids,))
    rows = {r["id"]: r for r in cur.fetchall()}
    if any(cid not in rows or rows[cid]["status"] not in TERMINAL for cid in child_ids):
        return None
    return json.dumps([
        {"run_id": cid, "status": rows[cid]["status"],
         "output": json.loads(rows[cid]["output_json"]) if rows[cid]["output_json"] else None,
         "error": rows[cid]["error"]}
        for cid in child_ids
    ])


def _mark(cur: Cursor, wp: dict[str, Any], result_json: str, timed_out: bool) -> dict[str, Any] | None:
    cur.execute(
        "UPDATE waitpoints SET resolved_at = now(), result_json = %s, timed_out = %s"
        " WHERE id = %s AND resolved_at IS NULL RETURNING *",
        (result_json, timed_out, wp["id"]),
    )
    return cur.fetchone()


def resolve(cur: Cursor, wp: dict[str, Any], result_json: str, timed_out: bool, *, how: str = "") -> None:
    """Resolve ``wp`` (locking its run first) and wake the run as its state calls for."""
    run = lock_run(cur, wp["run_id"])
    done = _mark(cur, wp, result_json, timed_out)
    if run is None or done is None:
        return
    waiting = run["waiting_on"] == done["wait_id"] and run["attempt"] == done["attempt"]
    detail = f"{done['kind']} wait {done['wait_id']} " + (how or ("timed out" if timed_out else "resolved"))
    if waiting and run["status"] == SUSPENDED:
        to_restore(cur, run, detail)
    elif waiting and run["status"] in (RUNNING, SUSPENDING) and run["agent"]:
        add_event(cur, run, "wait_resolved", detail + "; waking it on its agent", agent=run["agent"])
        _outbox.enqueue(cur, run["agent"], wait_resolved_message(run, done))
        notify_run(cur, run["id"])
    else:
        add_event(cur, run, "wait_resolved", detail, agent=run["agent"])


def current_wait(cur: Cursor, run: dict[str, Any]) -> dict[str, Any] | None:
    """The unresolved waitpoint ``run`` is waiting on now, if any."""
    if not run["waiting_on"] or run["status"] in TERMINAL:
        return None
    cur.execute("SELECT * FROM waitpoints WHERE run_id = %s AND attempt = %s AND wait_id = %s AND resolved_at IS NULL",
                (run["id"], run["attempt"], run["waiting_on"]))
    return cur.fetchone()


def wake(cur: Cursor, run_id: str) -> None:
    """End a run's current time wait now, as if its time had come (``torpor runs wake``)."""
    run = lock_run(cur, run_id)
    if run is None:
        raise NotFoundError(f"run {run_id!r} does not exist")
    wp = current_wait(cur, run)
    if wp is None:
        raise TorporError(f"run {run_id} is {run['status']} and not waiting on anything that can be woken "
                          "(only a wait.for_/wait.until that the run is suspended on, or suspending for)",
                          code=ErrorCode.FAILED_PRECONDITION)
    if wp["kind"] == "token":
        raise TorporError(f"run {run_id} waits on token {wp['token_id']}, not on a time; complete the token instead: "
                          f"torpor tokens complete {wp['token_id']} --data JSON", code=ErrorCode.FAILED_PRECONDITION)
    if wp["kind"] == "children":
        raise TorporError(f"run {run_id} waits on {len(wp['child_ids'] or [])} child run(s), not on a time; it resumes "
                          "when they finish", code=ErrorCode.FAILED_PRECONDITION)
    resolve(cur, wp, "null", False, how="ended early by torpor runs wake")


def register_token(cur: Cursor, run: dict[str, Any], token_id: str, timeout_unix: float) -> None:
    cur.execute(
        "INSERT INTO tokens (id, run_id, timeout_at) VALUES (%s, %s, to_timestamp(%s)) ON CONFLICT (id) DO NOTHING",
        (token_id, run["id"], timeout_unix or None),
    )


def complete_token(cur: Cursor, token_id: str, data_json: str) -> tuple[bool, str]:
    """Complete a token; (completed now?, run id). Unknown tokens are NOT_FOUND."""
    try:
        json.loads(data_json)
    except ValueError as exc:
        raise ConfigError(f"data is not valid JSON: {exc}") from None
    cur.execute("SELECT * FROM tokens WHERE id = %s FOR UPDATE", (token_id,))
    tok = cur.fetchone()
    if tok is None:
        raise NotFoundError(f"token {token_id!r} does not exist (it is created inside a run by wait.create_token)")
    if tok["completed_at"] is not None:
        return False, tok["run_id"]
    cur.execute("UPDATE tokens SET completed_at = now(), data_json = %s WHERE id = %s", (data_json, token_id))
    cur.execute("SELECT * FROM waitpoints WHERE token_id = %s AND resolved_at IS NULL ORDER BY id", (token_id,))
    for wp in cur.fetchall():
        resolve(cur, wp, data_json, False)
    return True, tok["run_id"]


def child_finished(cur: Cursor, child: dict[str, Any]) -> None:
    """A child run reached a terminal state: resolve its parent's children waits that are now complete."""
    cur.execute(
        "SELECT * FROM waitpoints WHERE run_id = %s AND resolved_at IS NULL AND kind = 'children' AND child_ids @> ARRAY[%s]",
        (child["parent_run_id"], child["id"]),
    )
    for wp in cur.fetchall():
        result = _children_result(cur, wp["child_ids"] or [])
        if result is not None:
            resolve(cur, wp, result, False)


def resolve_due(cur: Cursor, limit: int = 200) -> int:
    """Time waits whose deadline passed, and token waits whose timeout passed."""
    cur.execute(
        "SELECT w.* FROM waitpoints w WHERE w.resolved_at IS NULL AND w.due_at <= now()"
        " ORDER BY w.due_at LIMIT %s FOR UPDATE SKIP LOCKED",
        (limit,),
    )
    due = cur.fetchall()
    for wp in due:
        if wp["kind"] == "token":
            cur.execute("SELECT completed_at, data_json FROM tokens WHERE id = %s", (wp["token_id"],))
            tok = cur.fetchone()
            if tok and tok["completed_at"] is not None:
                resolve(cur, wp, tok["data_json"] or "null", False)
                continue
            resolve(cur, wp, "null", True)
        else:
            resolve(cur, wp, "null", False)
    return len(due)

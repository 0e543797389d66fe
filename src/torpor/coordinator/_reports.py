"""What agents report, applied to the database. Each handler is one transaction.

Every run-scoped report names (run_id, generation). A report whose generation
is not the run's current one, or from an agent the run is not on, is stale:
it changes nothing, and where the sender still holds a live container for it
the reply is KillRun(reason="stale_generation") (fencing).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from psycopg import sql

from torpor._errors import ConfigError, TorporError
from torpor._proto.v1 import agent_pb2, common_pb2
from torpor.coordinator import _lifecycle as life
from torpor.coordinator import _waits
from torpor.coordinator._db import Cursor, DatabaseError
from torpor.coordinator._states import (
    CANCELED,
    ON_AGENT,
    RESTORING,
    RUNNING,
    STARTING,
    SUSPENDING,
    TERMINAL,
    TransitionError,
    add_event,
    lock_run,
    notify,
    notify_run,
    transition,
)

log = logging.getLogger(__name__)

Replies = list[agent_pb2.CoordinatorMessage]

EXEC_DEADLINE = sql.SQL(
    "CASE WHEN max_duration > 0 THEN now() + make_interval(secs => GREATEST(0, max_duration - exec_seconds)) END"
)


class Superseded(Exception):
    """This stream's agent registered again on a newer stream; the old one must close."""


def kill_message(run_id: str, generation: int, reason: str) -> agent_pb2.CoordinatorMessage:
    return agent_pb2.CoordinatorMessage(
        kill=agent_pb2.KillRun(run=agent_pb2.RunRef(run_id=run_id, generation=generation), reason=reason))


def _current(cur: Cursor, agent: str, ref: agent_pb2.RunRef) -> dict[str, Any] | None:
    """The locked run if ``ref`` is its current generation on ``agent``; None when stale."""
    run = lock_run(cur, ref.run_id)
    if run is None or run["generation"] != ref.generation or run["agent"] != agent:
        return None
    return run


def _fence(cur: Cursor, agent: str, holding: list[agent_pb2.RunRef]) -> Replies:
    replies: Replies = []
    for ref in holding:
        cur.execute("SELECT status, generation, agent FROM runs WHERE id = %s", (ref.run_id,))
        run = cur.fetchone()
        if run is None or run["generation"] != ref.generation or run["agent"] != agent:
            replies.append(kill_message(ref.run_id, ref.generation, "stale_generation"))
        elif run["status"] not in ON_AGENT:
            replies.append(kill_message(ref.run_id, ref.generation, "canceled" if run["status"] == CANCELED else "stale_generation"))
    return replies


def register(cur: Cursor, coordinator_id: str, session_id: str, reg: agent_pb2.Register, lease: float) -> Replies:
    cur.execute(
        "INSERT INTO agents (name, coordinator_id, session_id, slots, facts, labels, alive, lease_expires_at,"
        " connected_at, last_heartbeat_at, incarnation)"
        " VALUES (%s, %s, %s, %s, %s, %s, true, now() + make_interval(secs => %s), now(), now(), %s)"
        " ON CONFLICT (name) DO UPDATE SET coordinator_id = EXCLUDED.coordinator_id, session_id = EXCLUDED.session_id,"
        " slots = EXCLUDED.slots, facts = EXCLUDED.facts, labels = EXCLUDED.labels, alive = true,"
        " lease_expires_at = EXCLUDED.lease_expires_at, connected_at = now(), last_heartbeat_at = now(),"
        # A new agent process numbers its reports from 1 again.
        " last_seq = CASE WHEN agents.incarnation IS NOT DISTINCT FROM EXCLUDED.incarnation"
        " THEN agents.last_seq ELSE 0 END, incarnation = EXCLUDED.incarnation",
        (reg.name, coordinator_id, session_id, reg.slots, reg.facts.SerializeToString(),
         json.dumps(dict(reg.labels)), lease, reg.incarnation or None),
    )
    notify(cur, "wake")
    return _fence(cur, reg.name, list(reg.holding))


STORE_PAUSE = 2.0
"""Seconds before a run whose start or restore found the store unreachable is placed again."""
KEY_PAUSE = 30.0
"""Seconds before a run whose snapshot key an agent lacked is placed again: an operator must add the key."""


class ReportGap(Exception):
    """A numbered report came before one the agent numbered earlier: the stream is closed, the agent replays."""


def apply_once(cur: Cursor, agent: str, session_id: str, seq: int, handler: Any, body: Any, *extra: Any) -> Replies:
    """Apply report number ``seq`` of this agent process unless it already was, in the same transaction.

    A report refused for good (stale, an invalid transition, bad input) counts
    as applied: sending it again would be refused again. Database failures
    propagate, roll everything back, and the report is neither applied nor
    acknowledged.
    """
    cur.execute("SELECT last_seq FROM agents WHERE name = %s AND session_id = %s FOR UPDATE", (agent, session_id))
    row = cur.fetchone()
    if row is None:
        raise Superseded(agent)
    if seq <= row["last_seq"]:
        return []  # applied before the stream that carried its acknowledgement broke
    if seq > row["last_seq"] + 1:
        raise ReportGap(f"report {seq} arrived before report {row['last_seq'] + 1}")
    try:
        with cur.connection.transaction():  # a savepoint: a refusal undoes its own writes only
            out = handler(cur, agent, body, *extra)
    except DatabaseError:
        raise
    except TorporError as exc:
        log.warning("agent %s: refused report %d (%s): %s", agent, seq, type(body).__name__, exc)
        out = []
    cur.execute("UPDATE agents SET last_seq = %s WHERE name = %s", (seq, agent))
    return out


def disconnected(cur: Cursor, agent: str, session_id: str) -> None:
    cur.execute("UPDATE agents SET coordinator_id = NULL WHERE name = %s AND session_id = %s", (agent, session_id))


def heartbeat(cur: Cursor, agent: str, session_id: str, hb: agent_pb2.Heartbeat, lease: float, max_failures: int,
              coordinator_id: str) -> Replies:
    # coordinator_id too: an agent whose lease lapsed while its stream stayed open (a hung agent, a short
    # partition) lost it to leases_expired, and the scheduler places work only on agents with one.
    cur.execute(
        "UPDATE agents SET lease_expires_at = now() + make_interval(secs => %s), alive = true, slots_used = %s,"
        " facts = CASE WHEN %s THEN %s ELSE facts END, last_heartbeat_at = now(), coordinator_id = %s"
        " WHERE name = %s AND session_id = %s RETURNING name",
        (lease, hb.slots_used, hb.HasField("facts"), hb.facts.SerializeToString(), coordinator_id, agent, session_id),
    )
    if cur.fetchone() is None:
        raise Superseded(agent)
    replies = _fence(cur, agent, list(hb.holding))
    # Runs placed here long enough ago that the agent should list them, but does not: lost (a command lost
    # with an earlier stream, a container that vanished unreported). Not a run whose StartRun/RestoreRun went
    # on this very stream: the agent lists a run from the moment it reads its command, and this heartbeat,
    # sent before that on the same ordered stream, says only that the command is still on its way.
    held = [ref.run_id for ref in hb.holding]
    cur.execute(
        "SELECT id FROM runs WHERE agent = %s AND status IN ('STARTING', 'RUNNING', 'SUSPENDING', 'RESTORING')"
        " AND NOT (id = ANY(%s)) AND updated_at < now() - make_interval(secs => %s)"
        " AND NOT (status IN ('STARTING', 'RESTORING') AND placed_session IS NOT DISTINCT FROM %s)",
        (agent, held, lease, session_id),
    )
    for row in cur.fetchall():
        run = lock_run(cur, row["id"])
        if run is not None and run["agent"] == agent and run["status"] in ON_AGENT:
            # STARTING/RESTORING and never listed: its StartRun/RestoreRun (sent once, after the claim) was lost
            # with a stream; nothing ran, so it is placed again without spending a host failure.
            never_ran = run["status"] in (STARTING, RESTORING)
            life.host_failure(cur, run, f"agent {agent} never received the run" if never_ran
                              else f"agent {agent} no longer holds the run", max_failures=max_failures,
                              spend=not never_ran, event="command_lost" if never_ran else "host_lost")
    # Sent after commit: the agent may let its containers run for fence_seconds from this heartbeat's sending,
    # once it has killed the stale ones (docs/coordinator.md, "Fencing").
    return [*replies, agent_pb2.CoordinatorMessage(heartbeat_ack=agent_pb2.HeartbeatAck(
        number=hb.number, stale=stale_refs(replies)))]


def stale_refs(replies: Replies) -> list[agent_pb2.RunRef]:
    """The runs that ``_fence`` answered with KillRun."""
    return [m.kill.run for m in replies if m.WhichOneof("msg") == "kill"]


def run_started(cur: Cursor, agent: str, m: agent_pb2.RunStarted) -> Replies:
    run = _current(cur, agent, m.run)
    if run is None or run["status"] not in (STARTING, RESTORING):
        if run is not None and run["status"] == RUNNING:
            return []  # a repeated report
        return [kill_message(m.run.run_id, m.run.generation, "stale_generation")]
    detail = (f"from checkpoint {m.checkpoint_id} in {m.restore_ms} ms" if m.restored
              else f"attempt {run['attempt']}")
    transition(cur, run["id"], RUNNING, event="restored" if m.restored else "started", detail=detail,
               only_from={STARTING, RESTORING}, generation=run["generation"], waiting_on=None,
               exec_started_at=sql.SQL("now()"), exec_deadline=EXEC_DEADLINE)
    cur.execute("UPDATE attempts SET status = 'RUNNING' WHERE run_id = %s AND number = %s", (run["id"], run["attempt"]))
    return []


def run_resumed(cur: Cursor, agent: str, m: agent_pb2.RunResumed) -> Replies:
    run = _current(cur, agent, m.run)
    if run is None:
        return [kill_message(m.run.run_id, m.run.generation, "stale_generation")]
    transition(cur, run["id"], RUNNING, event="resumed", detail=f"woken in place from wait {m.wait_id}",
               only_from={SUSPENDING}, generation=run["generation"], waiting_on=None,
               exec_started_at=sql.SQL("now()"), exec_deadline=EXEC_DEADLINE)
    return []


def run_exited(cur: Cursor, agent: str, m: agent_pb2.RunExited, max_failures: int) -> Replies:
    run = _current(cur, agent, m.run)
    if run is None or run["status"] not in ON_AGENT:
        return []  # stale, or already settled (canceled, timed out): the container is gone either way
    code = m.exit_code
    if run["status"] == RESTORING:
        life.host_failure(cur, run, f"restore failed: the container exited with code {code} ({m.reason or 'no reason'})",
                          max_failures=max_failures)
    elif run["status"] == SUSPENDING and m.reason == "suspended":
        cur.execute(
            "SELECT id FROM checkpoints WHERE run_id = %s AND generation = %s AND kind = 'SUSPEND' AND wait_id = %s",
            (run["id"], run["generation"], run["waiting_on"]),
        )
        if cur.fetchone() is not None:
            life.suspended(cur, run)
        else:
            life.host_failure(cur, run, "exited as suspended but no suspend checkpoint was recorded",
                              max_failures=max_failures)
    elif m.has_result and not m.error:
        life.complete(cur, run, m.output_json)
    elif m.has_result:
        life.attempt_failed(cur, run, error=m.error, traceback=m.traceback or None, final="FAILED", event="attempt_failed",
                            retry=not m.final)
    elif m.reason == "oom":
        # Not the host's fault, and the same limit would kill the next attempt too: no retry.
        life.attempt_failed(cur, run, error=m.error or "killed by the OOM killer", traceback=None,
                            final="OUT_OF_MEMORY", event="out_of_memory", retry=False)
    elif m.reason == "killed":
        life.host_failure(cur, run, f"the container was killed (exit code {code})", max_failures=max_failures)
    elif m.reason == "timed_out":
        life.attempt_failed(cur, run, error="timed out on the agent", traceback=None, final="TIMED_OUT", event="timed_out")
    else:
        life.attempt_failed(cur, run, error=f"the task process exited with code {code} without a result"
                            + (f" ({m.reason})" if m.reason else ""),
                            traceback=None, final="CRASHED", event="crashed")
    return []


def checkpoint_recorded(cur: Cursor, agent: str, m: agent_pb2.CheckpointRecorded, keep: int = 3) -> Replies:
    c = m.checkpoint
    if not c.id or not c.location:
        raise ConfigError("a recorded checkpoint needs an id and a location")
    kind = common_pb2.CheckpointKind.Name(c.kind) if c.kind else "PERIODIC"
    run = _current(cur, agent, m.run)
    if run is None:
        # A stale copy's snapshot is in the store all the same: record it released, so the janitor deletes it.
        cur.execute(
            "INSERT INTO checkpoints (run_id, id, kind, size_bytes, raw_bytes, duration_ms, agent, location, generation,"
            " key_id, network, attempt, released_at) SELECT id, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, attempt, now()"
            " FROM runs WHERE id = %s ON CONFLICT (run_id, id) DO NOTHING",
            (c.id, kind, c.size_bytes, c.raw_bytes, c.duration_ms, agent, c.location, m.run.generation,
             c.key_id or None, c.network or None, m.run.run_id),
        )
        return [kill_message(m.run.run_id, m.run.generation, "stale_generation")]
    # A dump that finishes after the run ended (canceled, timed out mid-dump) is recorded released: the
    # janitor deletes it from the store, as it did the run's other checkpoints.
    finished = run["status"] in TERMINAL
    cur.execute(
        "INSERT INTO checkpoints (run_id, id, kind, size_bytes, raw_bytes, duration_ms, agent, location, generation,"
        " attempt, wait_id, request_id, key_id, network, released_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
        " %s, %s, %s, %s, CASE WHEN %s THEN now() END) ON CONFLICT (run_id, id) DO NOTHING",
        (run["id"], c.id, kind, c.size_bytes, c.raw_bytes, c.duration_ms, agent, c.location, run["generation"],
         run["attempt"], run["waiting_on"] if kind == "SUSPEND" else None, m.request_id or None, c.key_id or None,
         c.network or None, finished),
    )
    if finished:
        return []
    add_event(cur, run, "checkpoint", f"{kind} {c.id}: {c.size_bytes} bytes in {c.duration_ms} ms", agent=agent,
              ref=m.request_id or None)
    life.keep_newest_checkpoints(cur, run, keep)
    notify_run(cur, run["id"])
    return []


# What an attempt may keep past its budget before the coordinator drops chunks itself: the agent keeps the budget
# (agent/_logs.py) and adds only notice and marker lines; this stops an agent that does not.
LOG_BUDGET_SLACK = 1 << 20


def log_data(cur: Cursor, agent: str, m: agent_pb2.LogData, budget: int) -> Replies:
    cur.execute("SELECT id, generation, attempt FROM runs WHERE id = %s", (m.run.run_id,))
    run = cur.fetchone()
    if run is None or run["generation"] != m.run.generation:
        return []
    attempt = m.attempt or run["attempt"]
    cur.execute("SELECT log_bytes, log_dropped_bytes FROM attempts WHERE run_id = %s AND number = %s FOR UPDATE",
                (run["id"], attempt))
    counts = cur.fetchone() or {"log_bytes": 0, "log_dropped_bytes": 0}
    data, dropped = m.data, m.dropped_bytes
    if not dropped and budget and counts["log_bytes"] >= budget + LOG_BUDGET_SLACK:
        data, dropped = b"", len(m.data)
    if data:
        cur.execute("INSERT INTO log_chunks (run_id, attempt, stream, data) VALUES (%s, %s, %s, %s)",
                    (run["id"], attempt, m.stream or "stdout", data))
    cur.execute("UPDATE attempts SET log_bytes = log_bytes + %s, log_dropped_bytes = log_dropped_bytes + %s"
                " WHERE run_id = %s AND number = %s", (len(data), dropped, run["id"], attempt))
    if dropped and not counts["log_dropped_bytes"]:  # once per attempt: the marker lines carry each count
        add_event(cur, {**run, "attempt": attempt}, "logs_dropped",
                  f"attempt {attempt}: output dropped (log budget {budget:,} bytes, or the agent's outbox full); "
                  "`torpor runs show` counts it, marker lines in the logs say where", agent=agent)
    notify(cur, "log:" + m.run.run_id)
    return []


def wait_requested(cur: Cursor, agent: str, m: agent_pb2.WaitRequested) -> Replies:
    run = _current(cur, agent, m.run)
    if run is None:
        return [kill_message(m.run.run_id, m.run.generation, "stale_generation")]
    if run["status"] == SUSPENDING and run["waiting_on"] == m.wait_id:
        return []  # repeated
    if run["status"] != RUNNING:
        raise TransitionError(run["id"], run["status"], SUSPENDING)
    _waits.request_wait(cur, run, m)
    return []


def token_registered(cur: Cursor, agent: str, m: agent_pb2.TokenRegistered) -> Replies:
    run = _current(cur, agent, m.run)
    if run is None:
        return [kill_message(m.run.run_id, m.run.generation, "stale_generation")]
    _waits.register_token(cur, run, m.token_id, m.timeout_unix)
    return []


def metadata(cur: Cursor, agent: str, m: agent_pb2.MetadataUpdate) -> Replies:
    run = _current(cur, agent, m.run)
    if run is None:
        return []
    try:
        json.loads(m.metadata_json)
    except ValueError as exc:
        raise ConfigError(f"metadata is not valid JSON: {exc}") from None
    cur.execute("UPDATE runs SET metadata_json = %s, updated_at = now() WHERE id = %s", (m.metadata_json, run["id"]))
    notify_run(cur, run["id"])
    return []


def command_failed(cur: Cursor, agent: str, m: agent_pb2.CommandFailed, max_failures: int) -> Replies:
    run = _current(cur, agent, m.run)
    if run is None:
        return []
    if m.environment_refused and (m.command == "start" and run["status"] == STARTING
                                  or m.command == "restore" and run["status"] == RESTORING):
        # Its packages are for another Python: placing it again would be refused again, forever.
        life.attempt_failed(cur, run, error=f"agent {agent} cannot run it: {m.error}", traceback=None,
                            final="CRASHED", event="environment_refused", retry=False)
    elif m.command == "restore" and run["status"] == RESTORING and m.bad_checkpoint_id:
        life.checkpoint_unusable(cur, run, m.bad_checkpoint_id, f"agent {agent}: {m.error}", max_failures=max_failures)
    elif m.snapshot_key_missing and m.command == "restore" and run["status"] == RESTORING:
        life.host_failure(cur, run, f"agent {agent} lacks the snapshot key: {m.error}; trying again in "
                          f"{KEY_PAUSE:g}s", max_failures=max_failures, spend=False, pause=KEY_PAUSE,
                          event="snapshot_key_missing")
    elif m.store_unavailable and (m.command == "start" and run["status"] == STARTING
                                  or m.command == "restore" and run["status"] == RESTORING):
        life.host_failure(cur, run, f"agent {agent} could not reach the store to {m.command} the run: {m.error}; "
                          f"placing it again in {STORE_PAUSE:g}s", max_failures=max_failures, spend=False,
                          pause=STORE_PAUSE, event="store_unavailable")
    elif m.command == "start" and run["status"] == STARTING or m.command == "restore" and run["status"] == RESTORING:
        life.host_failure(cur, run, f"agent {agent} could not {m.command} the run: {m.error}", max_failures=max_failures)
    else:
        add_event(cur, run, f"{m.command or 'command'}_failed", m.error, agent=agent, ref=m.request_id or None)
        notify_run(cur, run["id"])
    return []

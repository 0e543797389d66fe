"""Claiming runs for agents connected to this coordinator.

One transaction per round: the agents here with free slots; the oldest
claimable runs (QUEUED, or RESTORING without a host) whose (queue,
concurrency_key) is below its limit; an advisory lock per limited group so two
coordinators never both fill the last unit; the rows locked ``FOR UPDATE SKIP
LOCKED`` and checked again, so two coordinators never claim one run; each
claimed run gets a new generation and an agent. Commands go out after commit.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable

from torpor._proto.v1 import agent_pb2
from torpor._errors import TorporError
from torpor._seal import Keyring
from torpor.coordinator import _env as project_env
from torpor.coordinator import _environments as environments
from torpor.coordinator import _placement as placement
from torpor.coordinator._db import Cursor, Database
from torpor.coordinator._lifecycle import latest_checkpoint
from torpor.coordinator._states import QUEUED, TransitionError, add_event, notify_run
from torpor.coordinator._triggers import parse_settings
from torpor.coordinator._waits import wake_of

log = logging.getLogger(__name__)

UNPLACED_RETRIES = 16  # runs no agent could take last round, tried again each round beside the others

ACTIVE = "agent IS NOT NULL AND status IN ('STARTING', 'RUNNING', 'SUSPENDING', 'RESTORING')"

_CANDIDATE_COLUMNS = "r.id, r.queue, r.concurrency_key, r.concurrency_limit, r.ready_at, r.seq"
_CLAIMABLE = """
FROM runs r LEFT JOIN busy b ON b.queue = r.queue AND b.concurrency_key = r.concurrency_key
WHERE (r.status = 'QUEUED' OR (r.status = 'RESTORING' AND r.agent IS NULL)) AND r.ready_at <= now()
  AND (r.concurrency_limit = 0 OR COALESCE(b.n, 0) < r.concurrency_limit)
"""
# The oldest claimable runs, and apart from them a few of those no agent could take last time (runs.unplaced):
# those are tried again every round in their place by age, without filling the list ahead of the runs that can go.
_CANDIDATES = f"""
WITH busy AS (
    SELECT queue, concurrency_key, count(*) AS n FROM runs
    WHERE {ACTIVE} AND concurrency_limit > 0 GROUP BY 1, 2
)
(SELECT {_CANDIDATE_COLUMNS} {_CLAIMABLE} AND r.unplaced IS NULL ORDER BY r.ready_at, r.seq LIMIT %s)
UNION ALL
(SELECT {_CANDIDATE_COLUMNS} {_CLAIMABLE} AND r.unplaced IS NOT NULL ORDER BY r.ready_at, r.seq LIMIT %s)
ORDER BY ready_at, seq
"""

_MY_AGENTS = """
SELECT a.name, a.facts, a.slots - p.n AS free, p.memory, a.session_id
FROM agents a, LATERAL (SELECT count(*) AS n, COALESCE(sum(r.memory_bytes), 0) AS memory FROM runs r
                        WHERE r.agent = a.name AND r.status IN ('STARTING', 'RUNNING', 'SUSPENDING', 'RESTORING')) p
WHERE a.coordinator_id = %s AND a.alive AND a.lease_expires_at > now()
FOR UPDATE OF a
"""


def _group_lock_key(queue: str, ckey: str) -> int:
    """A signed 64-bit advisory lock key for one (queue, concurrency_key)."""
    digest = hashlib.sha256(f"torpor-queue\0{queue}\0{ckey}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class Claim:
    __slots__ = ("agent", "message", "session")

    def __init__(self, agent: str, message: agent_pb2.CoordinatorMessage, session: str) -> None:
        self.agent = agent
        self.message = message
        self.session = session  # the agent's stream it must go on (runs.placed_session), or not at all


def claim_round(cur: Cursor, coordinator_id: str, *, max_claims: int = 256, log_budget: int = 0,
                keyring: Keyring | None = None) -> list[Claim]:
    cur.execute(_MY_AGENTS, (coordinator_id,))
    mine = cur.fetchall()
    free = {r["name"]: int(r["free"]) for r in mine if r["free"] > 0}
    offers = {r["name"]: placement.offer_of(r["facts"], int(r["memory"])) for r in mine}
    sessions = {r["name"]: r["session_id"] or "" for r in mine}
    total = min(max_claims, sum(free.values()))
    if total <= 0:
        return []
    cur.execute(_CANDIDATES, (total * 2 + 16, UNPLACED_RETRIES))
    candidates = cur.fetchall()
    if not candidates:
        return []
    # Limited groups: take the group's advisory lock, then count again, so the
    # count cannot change under us until commit.
    room: dict[tuple[str, str], int] = {}
    for c in candidates:
        group = (c["queue"], c["concurrency_key"])
        if c["concurrency_limit"] <= 0 or group in room:
            continue
        cur.execute("SELECT pg_try_advisory_xact_lock(%s) AS ok", (_group_lock_key(*group),))
        got = cur.fetchone()
        if not got or not got["ok"]:
            room[group] = 0
            continue
        cur.execute(f"SELECT count(*) AS n FROM runs WHERE {ACTIVE} AND queue = %s AND concurrency_key = %s", group)
        n = cur.fetchone()
        room[group] = max(0, c["concurrency_limit"] - (n["n"] if n else 0))
    chosen: list[str] = []
    for c in candidates:
        group = (c["queue"], c["concurrency_key"])
        if c["concurrency_limit"] > 0:
            if room[group] <= 0:
                continue
            room[group] -= 1
        chosen.append(c["id"])
        if len(chosen) >= total:
            break
    if not chosen:
        return []
    cur.execute(
        "SELECT * FROM runs WHERE id = ANY(%s) AND (status = 'QUEUED' OR (status = 'RESTORING' AND agent IS NULL))"
        " FOR UPDATE SKIP LOCKED",
        (chosen,),
    )
    locked = {r["id"]: r for r in cur.fetchall()}
    claims: list[Claim] = []
    specs: dict[tuple[str, str], TaskSpec] = {}
    for run_id in chosen:
        if not any(n > 0 for n in free.values()):
            break
        run = locked.get(run_id)
        if run is None:
            continue
        task = _task_spec(cur, run, specs)
        ckpt = latest_checkpoint(cur, run) if run["status"] != QUEUED else None
        need = placement.need_of(run, task.settings, ckpt, task.env["python"] if task.env else "")
        agent = placement.choose(free, offers, need)
        if agent is None:
            placement.mark_unplaced(cur, run, placement.unplaced_reason(need, free, offers))
            continue
        try:
            claim = _assign(cur, run, agent, sessions[agent], task, ckpt, log_budget, keyring=keyring)
        except TorporError as exc:  # its secrets cannot be given (a key the coordinator lacks): it waits, saying why
            placement.mark_unplaced(cur, run, str(exc))
            continue
        if claim is not None:
            free[agent] -= 1
            offers[agent].take(need)
            claims.append(claim)
    return claims


@dataclass(frozen=True)
class TaskSpec:
    """What a claim round reads once per (task, version): its settings, code, project and environment."""

    settings: Any = None
    bundle: str = ""
    project: str = ""
    env: dict[str, Any] | None = None  # the deployment's environment row (id, sha256, python, location), if any


def _task_spec(cur: Cursor, run: dict[str, Any], cache: dict[tuple[str, str], TaskSpec]) -> TaskSpec:
    key = (run["task"], run["version"])
    if key not in cache:
        cur.execute(
            "SELECT t.settings, d.bundle_location, d.project, e.id AS env_id, e.sha256, e.python, e.location"
            " FROM tasks t JOIN deployments d USING (version) LEFT JOIN environments e ON e.id = d.environment_id"
            " WHERE t.task_id = %s AND t.version = %s",
            key,
        )
        row = cur.fetchone()
        cache[key] = TaskSpec() if row is None else TaskSpec(
            settings=parse_settings(row["settings"]), bundle=row["bundle_location"], project=row["project"],
            env=row if row["env_id"] else None)
    return cache[key]


def _assign(cur: Cursor, run: dict[str, Any], agent: str, session: str, task: TaskSpec, ckpt: dict[str, Any] | None,
            log_budget: int = 0, *, keyring: Keyring | None = None) -> Claim | None:
    settings, bundle, project = task.settings, task.bundle, task.project
    generation = run["generation"] + 1
    first_start = run["started_at"]
    spec = agent_pb2.RunSpec(
        run=agent_pb2.RunRef(run_id=run["id"], generation=generation), task=run["task"], version=run["version"],
        bundle_location=bundle, payload_json=run["payload_json"], attempt=run["attempt"], settings=settings,
        started_at_unix=first_start.timestamp() if first_start else time.time(), log_budget_bytes=log_budget,
    )
    if task.env is not None:  # start or restore: the same packages, at the same path
        environments.give_to(spec, task.env)
    # The attempt's budget holds across its starts and restores: the agent is told what it kept already.
    cur.execute("SELECT log_bytes FROM attempts WHERE run_id = %s AND number = %s", (run["id"], run["attempt"]))
    kept = cur.fetchone()
    spec.log_bytes_used = kept["log_bytes"] if kept else 0
    if run["status"] == QUEUED:
        if project:  # a start reads the project's variables as they are now; a restore has them in its memory
            project_env.give_to(cur, keyring, spec, project)
        cur.execute(
            "UPDATE runs SET status = 'STARTING', agent = %s, generation = %s, updated_at = now(), unplaced = NULL,"
            " placed_session = %s, started_at = COALESCE(started_at, now()) WHERE id = %s AND status = 'QUEUED'",
            (agent, generation, session, run["id"]),
        )
        cur.execute(
            "INSERT INTO attempts (run_id, number, status, agent) VALUES (%s, %s, 'STARTING', %s)"
            " ON CONFLICT (run_id, number) DO UPDATE SET agent = EXCLUDED.agent, status = 'STARTING', started_at = now()",
            (run["id"], run["attempt"], agent),
        )
        add_event(cur, run, "starting", f"attempt {run['attempt']}, generation {generation}", agent=agent)
        notify_run(cur, run["id"])
        return Claim(agent, agent_pb2.CoordinatorMessage(start=agent_pb2.StartRun(spec=spec)), session)
    if ckpt is None:
        # Nothing to restore from any more: the attempt starts over.
        cur.execute(
            "UPDATE runs SET status = 'QUEUED', exec_seconds = 0, waiting_on = NULL, unplaced = NULL, updated_at = now()"
            " WHERE id = %s",
            (run["id"],),
        )
        add_event(cur, run, "host_lost", "no checkpoint left to restore from; restarting the attempt")
        return None
    restore = agent_pb2.RestoreRun(spec=spec, checkpoint_location=ckpt["location"], checkpoint_id=ckpt["id"],
                                   checkpoint_key_id=ckpt["key_id"] or "")
    if ckpt["kind"] == "SUSPEND" and ckpt["wait_id"]:
        cur.execute("SELECT * FROM waitpoints WHERE run_id = %s AND attempt = %s AND wait_id = %s",
                    (run["id"], run["attempt"], ckpt["wait_id"]))
        wp = cur.fetchone()
        if wp is not None and wp["resolved_at"] is not None:
            restore.wake.CopyFrom(wake_of({**run, "generation": generation}, wp))
    cur.execute(
        "UPDATE runs SET agent = %s, generation = %s, updated_at = now(), unplaced = NULL, placed_session = %s"
        " WHERE id = %s AND status = 'RESTORING'",
        (agent, generation, session, run["id"]),
    )
    add_event(cur, run, "restoring", f"from checkpoint {ckpt['id']}, generation {generation}", agent=agent)
    notify_run(cur, run["id"])
    return Claim(agent, agent_pb2.CoordinatorMessage(restore=restore), session)


class Scheduler:
    """A thread that runs claim rounds when woken (trigger, slot freed, wait over) or every poll period."""

    def __init__(self, db: Database, coordinator_id: str, send: Callable[[str, agent_pb2.CoordinatorMessage, str], bool], *,
                 poll: float, log_budget: int = 0, keys: Callable[[], Keyring | None] = lambda: None) -> None:
        self._db = db
        self._keys = keys
        self._log_budget = log_budget
        self._id = coordinator_id
        self._send = send
        self._poll = poll
        self._event = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="torpor-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._event.set()
        self._thread.join(timeout=5)

    def wake(self) -> None:
        self._event.set()

    def _loop(self) -> None:
        while not self._stopped.is_set():
            self._event.wait(self._poll)
            self._event.clear()
            if self._stopped.is_set():
                return
            try:
                while not self._stopped.is_set():
                    claims = self._db.run(claim_round, self._id, log_budget=self._log_budget,
                                          keyring=self._keys())
                    by_agent: dict[str, int] = defaultdict(int)
                    for claim in claims:
                        by_agent[claim.agent] += 1
                        if not self._send(claim.agent, claim.message, claim.session):
                            log.warning("agent %s went away or reconnected before its command was sent; its next "
                                        "stream's heartbeats decide", claim.agent)
                    if not claims:
                        break
            except TransitionError:
                log.exception("scheduler round lost a race")
            except Exception:
                log.exception("scheduler round failed")
                self._stopped.wait(0.5)

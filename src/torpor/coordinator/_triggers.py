"""Creating runs: input checks, task lookup, idempotency keys, the insert.

Everything is checked before anything is written; a trigger or a whole batch
either creates all its runs in one transaction or fails with INVALID_ARGUMENT
and leaves the database as it was.
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass, field
from typing import Any

from torpor._errors import ConfigError, NotFoundError
from torpor._proto.v1 import common_pb2
from torpor.coordinator._config import Limits
from torpor.coordinator._db import Cursor
from torpor.coordinator._payload_check import check_payload

DEFAULT_RETRY = (3, 2.0, 1.0, 60.0, True)


@dataclass
class NewRun:
    """One run to create, as the caller asked for it."""

    task: str
    payload_json: str = "null"
    idempotency_key: str = ""
    idempotency_ttl: float = 0.0
    queue: str = ""
    concurrency_key: str = ""
    tags: list[str] = field(default_factory=list)
    version: str = ""
    delay: float = 0.0
    parent_run_id: str = ""


@dataclass(frozen=True)
class TaskRow:
    task_id: str
    version: str
    bundle_location: str
    settings: common_pb2.TaskSettings


def new_run_id() -> str:
    return "run_" + uuid.uuid4().hex[:24]


def retry_policy(settings: common_pb2.TaskSettings) -> tuple[int, float, float, float, bool]:
    """(max_attempts, factor, min_timeout, max_timeout, randomize); unset numbers take the defaults.

    With no retry policy at all the defaults are 3 attempts, factor 2, 1 s, 60 s, randomized.
    """
    if not settings.HasField("retry"):
        return DEFAULT_RETRY
    r = settings.retry
    return (
        r.max_attempts if r.max_attempts > 0 else 3,
        r.factor if r.factor > 0 else 2.0,
        r.min_timeout if r.min_timeout > 0 else 1.0,
        r.max_timeout if r.max_timeout > 0 else 60.0,
        r.randomize,
    )


def retry_delay(failed_attempt: int, factor: float, min_timeout: float, max_timeout: float, randomize: bool, *, rand: float | None = None) -> float:
    """Seconds before the attempt after ``failed_attempt``:
    min(max_timeout, min_timeout * factor^(failed_attempt-1)), times a random [1, 2) when randomize."""
    delay = min(max_timeout, min_timeout * factor ** max(0, failed_attempt - 1))
    if randomize:
        delay *= 1.0 + (random.random() if rand is None else rand)
    return delay


def check_new_run(item: NewRun, limits: Limits) -> None:
    """Raise ConfigError (INVALID_ARGUMENT) with a precise message when ``item`` breaks a limit."""
    if not item.task:
        raise ConfigError("task is required")
    for name, value in (("task", item.task), ("version", item.version), ("idempotency key", item.idempotency_key),
                        ("queue", item.queue), ("concurrency key", item.concurrency_key),
                        *(("tag", t) for t in item.tags)):
        if "\0" in value:  # PostgreSQL text cannot hold it: refused here with a message, not by the database
            raise ConfigError(f"{name} {value[:40]!r} contains a NUL character, which is not allowed")
    size = len(item.payload_json.encode("utf-8"))
    if size > limits.max_payload_bytes:
        raise ConfigError(f"payload is {size} bytes; the limit is {limits.max_payload_bytes} bytes")
    try:
        # parse_int: only the syntax matters here, and Python refuses to convert huge integers
        json.loads(item.payload_json, parse_int=len)
    except ValueError as exc:
        raise ConfigError(f"payload is not valid JSON: {exc}") from None
    if len(item.tags) > limits.max_tags:
        raise ConfigError(f"{len(item.tags)} tags given; at most {limits.max_tags} are allowed")
    for tag in item.tags:
        if not tag or len(tag) > limits.max_tag_chars:
            raise ConfigError(f"tag {tag[:40]!r} must have 1 to {limits.max_tag_chars} characters")
    if len(item.idempotency_key) > limits.max_idempotency_key_chars:
        raise ConfigError(
            f"idempotency key has {len(item.idempotency_key)} characters; at most {limits.max_idempotency_key_chars} are allowed"
        )
    if item.idempotency_ttl < 0:
        raise ConfigError(f"idempotency key TTL must be positive, got {item.idempotency_ttl}")
    if item.delay < 0:
        raise ConfigError(f"delay must be zero or positive, got {item.delay}")
    for name, value in (("queue", item.queue), ("concurrency key", item.concurrency_key)):
        if len(value) > 256:
            raise ConfigError(f"{name} has {len(value)} characters; at most 256 are allowed")


def check_batch(items: list[NewRun], limits: Limits) -> None:
    if len(items) > limits.max_batch_items:
        raise ConfigError(f"batch has {len(items)} items; at most {limits.max_batch_items} are allowed")
    if not items:
        raise ConfigError("batch has no items")
    for i, item in enumerate(items):
        try:
            check_new_run(item, limits)
        except ConfigError as exc:
            raise ConfigError(f"item {i}: {exc.message}") from None


def find_task(cur: Cursor, task: str, version: str = "") -> TaskRow:
    if version:
        cur.execute(
            "SELECT t.task_id, t.version, t.settings, d.bundle_location FROM tasks t JOIN deployments d USING (version)"
            " WHERE t.task_id = %s AND t.version = %s",
            (task, version),
        )
    else:
        cur.execute(
            "SELECT t.task_id, t.version, t.settings, d.bundle_location FROM tasks t JOIN deployments d USING (version)"
            " WHERE t.task_id = %s ORDER BY d.seq DESC LIMIT 1",
            (task,),
        )
    row = cur.fetchone()
    if row is None:
        if version:
            raise ConfigError(f"unknown task {task!r} in version {version!r}: that deployment does not define it")
        raise ConfigError(f"unknown task {task!r}: no deployed version defines it (deploy it first)")
    return TaskRow(row["task_id"], row["version"], row["bundle_location"], parse_settings(row["settings"]))


def parse_settings(data: bytes) -> common_pb2.TaskSettings:
    settings = common_pb2.TaskSettings()
    settings.ParseFromString(bytes(data))
    return settings


_INSERT = """
WITH r AS (
    INSERT INTO runs (id, task, version, status, payload_json, tags, queue, concurrency_key, concurrency_limit,
                      idempotency_key, parent_run_id, max_attempts, retry_factor, retry_min, retry_max,
                      retry_randomize, max_duration, memory_bytes, ready_at)
    VALUES (%(id)s, %(task)s, %(version)s, 'QUEUED', %(payload)s, %(tags)s, %(queue)s, %(ckey)s, %(limit)s,
            %(ikey)s, %(parent)s, %(attempts)s, %(factor)s, %(rmin)s, %(rmax)s, %(randomize)s, %(max_duration)s,
            %(memory)s, now() + make_interval(secs => %(delay)s))
    RETURNING *
), e AS (
    INSERT INTO run_events (run_id, type, detail, attempt) SELECT id, 'queued', %(detail)s, attempt FROM r
)
SELECT * FROM r
"""


def create_runs(cur: Cursor, items: list[NewRun], limits: Limits) -> list[tuple[dict[str, Any], bool]]:
    """Insert ``items`` (already checked); return (run row, existing) per item, in order.

    ``existing`` is True when an idempotency key matched a live run, which is returned instead.
    """
    tasks: dict[tuple[str, str], TaskRow] = {}
    parents: set[str] = set()
    for item in items:
        key = (item.task, item.version)
        if key not in tasks:
            tasks[key] = find_task(cur, item.task, item.version)
        if item.parent_run_id and item.parent_run_id not in parents:
            cur.execute("SELECT 1 FROM runs WHERE id = %s", (item.parent_run_id,))
            if cur.fetchone() is None:
                raise ConfigError(f"parent run {item.parent_run_id!r} does not exist")
            parents.add(item.parent_run_id)
    for item in items:  # every payload fits its task's parameter type before anything is written
        task = tasks[(item.task, item.version)]
        check_payload(task.task_id, task.settings.payload_schema_json, item.payload_json)
    out: list[tuple[dict[str, Any], bool]] = []
    for item in items:
        task = tasks[(item.task, item.version)]
        run_id = new_run_id()
        if item.idempotency_key:
            existing = _claim_idempotency_key(cur, item, run_id, item.idempotency_ttl or limits.default_idempotency_ttl)
            if existing is not None:
                out.append((existing, True))
                continue
        out.append((_insert_run(cur, run_id, item, task), False))
    cur.execute("SELECT pg_notify('torpor', 'wake')")
    return out


def _insert_run(cur: Cursor, run_id: str, item: NewRun, task: TaskRow) -> dict[str, Any]:
    attempts, factor, rmin, rmax, randomize = retry_policy(task.settings)
    cur.execute(
        _INSERT,
        {
            "id": run_id,
            "task": task.task_id,
            "version": task.version,
            "payload": item.payload_json,
            "tags": list(item.tags),
            "queue": item.queue or task.settings.queue or task.task_id,
            "ckey": item.concurrency_key,
            "limit": max(0, task.settings.concurrency_limit),
            "ikey": item.idempotency_key or None,
            "parent": item.parent_run_id or None,
            "attempts": attempts,
            "factor": factor,
            "rmin": rmin,
            "rmax": rmax,
            "randomize": randomize,
            "max_duration": max(0.0, task.settings.max_duration),
            "memory": max(0, task.settings.memory_bytes),
            "delay": float(item.delay),
            "detail": f"version {task.version}" + (f", delayed {item.delay:g}s" if item.delay else ""),
        },
    )
    row = cur.fetchone()
    assert row is not None
    return row


def _claim_idempotency_key(cur: Cursor, item: NewRun, run_id: str, ttl: float) -> dict[str, Any] | None:
    """Take the key for ``run_id`` (new, or replacing an expired one); else return the live run holding it."""
    cur.execute(
        "INSERT INTO idempotency_keys (task, key, run_id, expires_at)"
        " VALUES (%s, %s, %s, now() + make_interval(secs => %s))"
        " ON CONFLICT (task, key) DO UPDATE SET run_id = EXCLUDED.run_id, expires_at = EXCLUDED.expires_at"
        " WHERE idempotency_keys.expires_at <= now()"
        " RETURNING run_id",
        (item.task, item.idempotency_key, run_id, float(ttl)),
    )
    if cur.fetchone() is not None:
        return None
    cur.execute(
        "SELECT r.* FROM idempotency_keys k JOIN runs r ON r.id = k.run_id WHERE k.task = %s AND k.key = %s",
        (item.task, item.idempotency_key),
    )
    return cur.fetchone()


def replay_item(cur: Cursor, run_id: str) -> NewRun:
    cur.execute("SELECT task, payload_json, tags, queue, concurrency_key FROM runs WHERE id = %s", (run_id,))
    row = cur.fetchone()
    if row is None:
        raise NotFoundError(f"run {run_id} does not exist")
    return NewRun(task=row["task"], payload_json=row["payload_json"], tags=list(row["tags"]),
                  concurrency_key=row["concurrency_key"])


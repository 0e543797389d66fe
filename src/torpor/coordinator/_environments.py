"""Environments (a deployment's third-party packages) kept in the store, and deployments as `torpor deployments show` sees them.

An environment is uploaded once through PutEnvironment (clients need no store
credentials): streamed into the store under environments/<id>/<sha256>.tar.zst
while its size and sha256 are counted, committed only if both match the
header, then recorded. The first upload of an id is the one recorded; a
later one (another deploy that found none when it asked) writes nothing if
the id is recorded by then, and if both were under way at once, each wrote
its own object (different bytes have different names), so the recorded
sha256 always matches the object recorded. Deployments name the environment their runs get; the scheduler
puts it into each RunSpec, start or restore, so a restore on another host
mounts the same packages.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Iterator

from torpor._errors import ConfigError, ErrorCode, NotFoundError, TorporError
from torpor._proto.v1 import agent_pb2, coordinator_pb2
from torpor.agent._environments import ENV_ID, MAX_ENV_BYTES, environment_key
from torpor.coordinator._convert import ts
from torpor.coordinator._db import Cursor


def _message(row: dict[str, Any]) -> coordinator_pb2.Environment:
    return coordinator_pb2.Environment(
        id=row["id"], sha256=row["sha256"], size_bytes=row["size_bytes"], python=row["python"],
        platform=row["platform"], requirements=list(row["requirements"]), created_at=ts(row["created_at"]),
        location=row["location"])


def get(cur: Cursor, env_id: str) -> coordinator_pb2.Environment:
    cur.execute("SELECT * FROM environments WHERE id = %s", (env_id,))
    row = cur.fetchone()
    if row is None:
        raise NotFoundError(f"environment {env_id} was never uploaded")
    return _message(row)


def find(cur: Cursor, env_id: str) -> coordinator_pb2.Environment | None:
    cur.execute("SELECT * FROM environments WHERE id = %s", (env_id,))
    row = cur.fetchone()
    return _message(row) if row is not None else None


def receive(store: Any | None, chunks: Iterator[coordinator_pb2.EnvironmentChunk],
            recorded: Callable[[str], coordinator_pb2.Environment | None] = lambda _: None,
            ) -> coordinator_pb2.Environment:
    """Stream an uploaded environment into the store; return its header once size and sha256 matched.

    ``recorded(id)``: the environment if it is recorded already; then nothing is written.
    """
    if store is None:
        raise TorporError("this coordinator has no --store, so it cannot keep environments; start it with --store",
                          code=ErrorCode.FAILED_PRECONDITION)
    first = next(chunks, None)
    if first is None or not first.HasField("header"):
        raise ConfigError("an environment upload starts with its header")
    head = first.header
    if not ENV_ID.match(head.id) or len(head.sha256) != 64 or not head.python or not 0 < head.size_bytes <= MAX_ENV_BYTES:
        raise ConfigError(f"environment header {head.id!r}: needs an env-<24 hex> id, a sha256, a Python version and "
                          f"a size of at most {MAX_ENV_BYTES:,} bytes")
    known = recorded(head.id)
    if known is not None:
        for _ in chunks:  # the client streams it all the same; none of it is needed
            pass
        return known
    key = environment_key(head.id, head.sha256)
    h, size = hashlib.sha256(), 0
    with store.open_writer(key) as w:  # aborted (nothing visible) on any error below
        if first.data:
            h.update(first.data)
            size += len(first.data)
            w.write(first.data)
        for chunk in chunks:
            size += len(chunk.data)
            if size > head.size_bytes:
                raise ConfigError(f"environment {head.id} is bigger than its header says ({head.size_bytes:,} bytes)")
            h.update(chunk.data)
            w.write(chunk.data)
        if size != head.size_bytes or h.hexdigest() != head.sha256:
            raise ConfigError(f"environment {head.id} arrived as {size:,} bytes with sha256 {h.hexdigest()[:12]}…, "
                              f"not the {head.size_bytes:,} bytes and {head.sha256[:12]}… announced; nothing was kept")
    out = coordinator_pb2.Environment()
    out.CopyFrom(head)
    out.location = key
    return out


def record(cur: Cursor, env: coordinator_pb2.Environment) -> coordinator_pb2.Environment:
    cur.execute(
        "INSERT INTO environments (id, location, sha256, size_bytes, python, platform, requirements)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
        (env.id, env.location, env.sha256, env.size_bytes, env.python, env.platform, list(env.requirements)))
    return get(cur, env.id)


def check_deploy(cur: Cursor, env_id: str) -> None:
    if env_id:
        get(cur, env_id)  # NOT_FOUND: upload it first


def deployment(cur: Cursor, version: str, project: str) -> coordinator_pb2.Deployment:
    if version:
        cur.execute("SELECT * FROM deployments WHERE version = %s", (version,))
    elif project:
        cur.execute("SELECT * FROM deployments WHERE project = %s ORDER BY seq DESC LIMIT 1", (project,))
    else:
        raise ConfigError("give a deployment version or a project")
    row = cur.fetchone()
    if row is None:
        raise NotFoundError(f"no deployment {version or 'of project ' + project}")
    cur.execute("SELECT task_id FROM tasks WHERE version = %s ORDER BY task_id", (row["version"],))
    out = coordinator_pb2.Deployment(version=row["version"], project=row["project"], created_at=ts(row["created_at"]),
                                     tasks=[r["task_id"] for r in cur.fetchall()])
    if row.get("environment_id"):
        out.environment.CopyFrom(get(cur, row["environment_id"]))
    return out


def give_to(spec: agent_pb2.RunSpec, env: dict[str, Any]) -> None:
    """Name the deployment's environment (its row, read with the task by the scheduler) in a run's spec."""
    spec.environment_id, spec.environment_sha256, spec.environment_python = env["env_id"], env["sha256"], env["python"]
    spec.environment_location = env["location"]

"""The public API, ``torpor.v1.Coordinator``."""

from __future__ import annotations

import datetime as dt
import functools
import inspect
import logging
import time
import uuid
from typing import Any, Callable, Iterator

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from torpor._errors import ConfigError, ErrorCode, NotFoundError, TorporError
from torpor._proto.v1 import agent_pb2, common_pb2, coordinator_pb2, coordinator_pb2_grpc
from torpor._seal import Keyring
from torpor.coordinator import _convert as convert
from torpor.coordinator import _env as project_env
from torpor.coordinator import _environments as environments
from torpor.coordinator import _lifecycle as life
from torpor.coordinator import _outbox, _waits
from torpor.coordinator._auth import KeyChecker, StreamGuard
from torpor.coordinator._config import CoordinatorConfig
from torpor.coordinator._db import Cursor, Database
from torpor.coordinator._hub import Hub
from torpor.coordinator._states import RUNNING, TERMINAL, add_event, lock_run, notify_run
from torpor.coordinator._triggers import NewRun, check_batch, check_new_run, create_runs, replay_item

log = logging.getLogger(__name__)

WATCH_POLL = 2.0


def _rpc(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn TorporError into a gRPC status with its message; never leak a raw exception."""

    def fail(context: grpc.ServicerContext, exc: Exception) -> None:
        if isinstance(exc, TorporError):
            context.abort(exc.code.grpc_status, exc.message)
        log.exception("%s failed", fn.__name__)
        context.abort(grpc.StatusCode.INTERNAL, f"internal error in {fn.__name__}: {type(exc).__name__}")

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def stream(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            try:
                yield from fn(self, request, context)
            except Exception as exc:  # noqa: BLE001 - mapped to a status just above
                fail(context, exc)
        return stream

    @functools.wraps(fn)
    def unary(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return fn(self, request, context)
        except Exception as exc:  # noqa: BLE001
            fail(context, exc)
    return unary


def new_run_from(req: coordinator_pb2.TriggerRequest) -> NewRun:
    o = req.options
    return NewRun(task=req.task, payload_json=req.payload_json or "null", idempotency_key=o.idempotency_key,
                  idempotency_ttl=o.idempotency_key_ttl, queue=o.queue, concurrency_key=o.concurrency_key,
                  tags=list(o.tags), version=o.version, delay=o.delay, parent_run_id=o.parent_run_id)


def _get_row(cur: Cursor, run_id: str) -> dict[str, Any]:
    cur.execute("SELECT * FROM runs WHERE id = %s", (run_id,))
    row = cur.fetchone()
    if row is None:
        raise NotFoundError(f"run {run_id!r} does not exist")
    return row


def _get_full(cur: Cursor, run_id: str) -> common_pb2.Run:
    row = _get_row(cur, run_id)
    run = convert.run_full(cur, row)
    wp = _waits.current_wait(cur, row)
    if wp is not None:
        run.waiting.CopyFrom(convert.run_wait(wp))
    return run


def _deploy(cur: Cursor, req: coordinator_pb2.DeployRequest) -> bool:
    environments.check_deploy(cur, req.environment_id)
    cur.execute(
        "INSERT INTO deployments (version, project, bundle_location, environment_id) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (version) DO NOTHING RETURNING version",
        (req.version, req.project, req.bundle_location, req.environment_id or None),
    )
    if cur.fetchone() is None:
        return False
    for t in req.tasks:
        cur.execute("INSERT INTO tasks (task_id, version, settings) VALUES (%s, %s, %s)",
                    (t.id, req.version, t.SerializeToString()))
    return True


def _list_runs(cur: Cursor, req: coordinator_pb2.ListRunsRequest) -> coordinator_pb2.ListRunsResponse:
    size = req.page_size or 50
    if not 1 <= size <= 1000:
        raise ConfigError(f"page_size must be 1 to 1000, got {size}")
    where, params = ["true"], []
    if req.status:
        where.append("status = ANY(%s)")
        params.append([common_pb2.RunStatus.Name(s) for s in req.status])
    if req.task:
        where.append("task = %s")
        params.append(req.task)
    if req.tag:
        where.append("tags @> ARRAY[%s]")
        params.append(req.tag)
    if req.HasField("created_after"):
        where.append("created_at >= %s")
        params.append(req.created_after.ToDatetime(tzinfo=dt.timezone.utc))
    if req.HasField("created_before"):
        where.append("created_at < %s")
        params.append(req.created_before.ToDatetime(tzinfo=dt.timezone.utc))
    if req.page_token:
        try:
            where.append("seq < %s")
            params.append(int(req.page_token))
        except ValueError:
            raise ConfigError(f"page_token {req.page_token!r} is not one this server returned") from None
    cur.execute(f"SELECT * FROM runs WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT %s", (*params, size + 1))
    rows = cur.fetchall()
    out = coordinator_pb2.ListRunsResponse(runs=[convert.run_summary(r) for r in rows[:size]])
    if len(rows) > size:
        out.next_page_token = str(rows[size - 1]["seq"])
    return out


def _request_checkpoint(cur: Cursor, run_id: str) -> tuple[str, int]:
    run = lock_run(cur, run_id)
    if run is None:
        raise NotFoundError(f"run {run_id!r} does not exist")
    if run["status"] != RUNNING or not run["agent"]:
        raise TorporError(f"run {run_id} is {run['status']}; only a RUNNING run can be checkpointed",
                          code=ErrorCode.FAILED_PRECONDITION)
    request_id = "ckr_" + uuid.uuid4().hex[:16]
    _outbox.enqueue(cur, run["agent"], agent_pb2.CoordinatorMessage(checkpoint=agent_pb2.CheckpointCommand(
        run=agent_pb2.RunRef(run_id=run_id, generation=run["generation"]),
        kind=common_pb2.ON_DEMAND, request_id=request_id)))
    add_event(cur, run, "checkpoint_requested", "on demand", ref=request_id)
    notify_run(cur, run_id)
    return request_id, run["generation"]


def _checkpoint_outcome(cur: Cursor, run_id: str, request_id: str) -> common_pb2.Checkpoint | str | None:
    cur.execute("SELECT * FROM checkpoints WHERE run_id = %s AND request_id = %s", (run_id, request_id))
    row = cur.fetchone()
    if row is not None:
        return convert.checkpoint(row)
    cur.execute("SELECT detail FROM run_events WHERE run_id = %s AND ref = %s AND type LIKE '%%failed'", (run_id, request_id))
    failed = cur.fetchone()
    if failed is not None:
        return failed["detail"] or "the agent could not checkpoint the run"
    cur.execute("SELECT status FROM runs WHERE id = %s", (run_id,))
    run = cur.fetchone()
    if run is None or run["status"] != RUNNING:
        return f"the run left RUNNING ({run['status'] if run else 'gone'}) before the checkpoint was recorded"
    return None


def _logs_after(cur: Cursor, run_id: str, after: int) -> tuple[list[dict[str, Any]], str]:
    cur.execute("SELECT id, attempt, stream, data, time FROM log_chunks WHERE run_id = %s AND id > %s ORDER BY id LIMIT 500",
                (run_id, after))
    rows = cur.fetchall()
    return rows, _get_row(cur, run_id)["status"]


def _list_agents(cur: Cursor) -> coordinator_pb2.ListAgentsResponse:
    cur.execute("SELECT now() AS now")
    now = cur.fetchone()["now"]  # type: ignore[index]
    cur.execute(
        "SELECT a.*, (SELECT count(*) FROM runs r WHERE r.agent = a.name AND r.status IN"
        " ('STARTING', 'RUNNING', 'SUSPENDING', 'RESTORING')) AS placed FROM agents a ORDER BY name"
    )
    out = coordinator_pb2.ListAgentsResponse()
    for row in cur.fetchall():
        info = convert.agent_info(row, now)
        # The runs placed on it, as the scheduler counts them: the agent's own
        # figure comes with its next heartbeat and lags a suspend or an exit.
        info.slots_used = row["placed"]
        out.agents.append(info)
    return out


def _store_bundle(store: Any | None, req: coordinator_pb2.DeployRequest) -> coordinator_pb2.DeployRequest:
    """Check an uploaded bundle against its version and keep it in the store."""
    import hashlib

    import zstandard

    from torpor.agent._bundle import MAX_BUNDLE_BYTES, VERSION_LEN, bundle_key

    if store is None:
        raise TorporError("this coordinator has no --store, so it cannot keep uploaded bundles; start it with --store",
                          code=ErrorCode.FAILED_PRECONDITION)
    try:
        tar = zstandard.ZstdDecompressor().decompress(req.bundle, max_output_size=MAX_BUNDLE_BYTES * 2)
    except zstandard.ZstdError as exc:
        raise ConfigError(f"the uploaded bundle is not zstd data: {exc}") from None
    actual = hashlib.sha256(tar).hexdigest()[:VERSION_LEN]
    if actual != req.version:
        raise ConfigError(f"the uploaded bundle hashes to version {actual}, not {req.version}; nothing was stored")
    key = bundle_key(req.version)
    if not store.exists(key):
        store.put_bytes(key, bytes(req.bundle))
    out = coordinator_pb2.DeployRequest()
    out.CopyFrom(req)
    out.bundle = b""
    out.bundle_location = key
    return out


class CoordinatorServicer(coordinator_pb2_grpc.CoordinatorServicer):
    def __init__(self, db: Database, config: CoordinatorConfig, hub: Hub, store: Any | None = None,
                 checker: KeyChecker | None = None, keys: Callable[[], Keyring | None] = lambda: None) -> None:
        self._checker = checker
        self._keys = keys
        self._db = db
        self._config = config
        self._hub = hub
        self._store = store

    @_rpc
    def Deploy(self, req: coordinator_pb2.DeployRequest, context: grpc.ServicerContext) -> coordinator_pb2.DeployResponse:
        if not req.version:
            raise ConfigError("version is required")
        if not req.tasks:
            raise ConfigError("a deployment must declare at least one task")
        seen: set[str] = set()
        for t in req.tasks:
            if not t.id:
                raise ConfigError("every task needs an id")
            if t.id in seen:
                raise ConfigError(f"task {t.id!r} is declared twice")
            if t.concurrency_limit < 0 or t.max_duration < 0:
                raise ConfigError(f"task {t.id!r}: concurrency_limit and max_duration must not be negative")
            seen.add(t.id)
        if req.bundle:
            req = _store_bundle(self._store, req)
        created = self._db.run(_deploy, req)
        return coordinator_pb2.DeployResponse(version=req.version, created=created)

    @_rpc
    def Trigger(self, req: coordinator_pb2.TriggerRequest, context: grpc.ServicerContext) -> coordinator_pb2.TriggerResponse:
        item = new_run_from(req)
        check_new_run(item, self._config.limits)
        row, existing = self._db.run(create_runs, [item], self._config.limits)[0]
        return coordinator_pb2.TriggerResponse(run_id=row["id"], existing=existing, run=convert.run_summary(row))

    @_rpc
    def BatchTrigger(self, req: coordinator_pb2.BatchTriggerRequest, context: grpc.ServicerContext) -> coordinator_pb2.BatchTriggerResponse:
        items = [new_run_from(r) for r in req.items]
        check_batch(items, self._config.limits)
        created = self._db.run(create_runs, items, self._config.limits)
        return coordinator_pb2.BatchTriggerResponse(runs=[
            coordinator_pb2.TriggerResponse(run_id=row["id"], existing=existing, run=convert.run_summary(row))
            for row, existing in created
        ])

    @_rpc
    def GetRun(self, req: coordinator_pb2.GetRunRequest, context: grpc.ServicerContext) -> common_pb2.Run:
        return self._db.run(_get_full, req.run_id)

    @_rpc
    def ListRuns(self, req: coordinator_pb2.ListRunsRequest, context: grpc.ServicerContext) -> coordinator_pb2.ListRunsResponse:
        return self._db.run(_list_runs, req)

    @_rpc
    def CancelRun(self, req: coordinator_pb2.CancelRunRequest, context: grpc.ServicerContext) -> common_pb2.Run:
        def work(cur: Cursor) -> common_pb2.Run:
            life.cancel(cur, req.run_id)
            return _get_full(cur, req.run_id)
        return self._db.run(work)

    @_rpc
    def ReplayRun(self, req: coordinator_pb2.ReplayRunRequest, context: grpc.ServicerContext) -> coordinator_pb2.TriggerResponse:
        def work(cur: Cursor) -> tuple[dict[str, Any], bool]:
            item = replay_item(cur, req.run_id)
            check_new_run(item, self._config.limits)
            return create_runs(cur, [item], self._config.limits)[0]
        row, existing = self._db.run(work)
        return coordinator_pb2.TriggerResponse(run_id=row["id"], existing=existing, run=convert.run_summary(row))

    @_rpc
    def CheckpointRun(self, req: coordinator_pb2.CheckpointRunRequest, context: grpc.ServicerContext) -> coordinator_pb2.CheckpointRunResponse:
        with self._hub.watch("run:" + req.run_id) as changed:
            request_id, _ = self._db.run(_request_checkpoint, req.run_id)
            if not req.wait:
                return coordinator_pb2.CheckpointRunResponse()
            remaining = context.time_remaining()
            deadline = time.monotonic() + (remaining if remaining is not None else 600.0)
            while True:
                outcome = self._db.run(_checkpoint_outcome, req.run_id, request_id)
                if isinstance(outcome, common_pb2.Checkpoint):
                    return coordinator_pb2.CheckpointRunResponse(checkpoint=outcome)
                if isinstance(outcome, str):
                    raise TorporError(f"checkpoint of run {req.run_id} failed: {outcome}", code=ErrorCode.ABORTED)
                if time.monotonic() > deadline or not context.is_active():
                    raise TorporError(f"checkpoint of run {req.run_id} not recorded in time", code=ErrorCode.DEADLINE_EXCEEDED)
                changed(min(WATCH_POLL, max(0.01, deadline - time.monotonic())))

    @_rpc
    def CompleteToken(self, req: coordinator_pb2.CompleteTokenRequest, context: grpc.ServicerContext) -> coordinator_pb2.CompleteTokenResponse:
        if not req.token_id:
            raise ConfigError("token_id is required")
        completed, run_id = self._db.run(_waits.complete_token, req.token_id, req.data_json or "null")
        return coordinator_pb2.CompleteTokenResponse(completed=completed, run_id=run_id)

    @_rpc
    def WakeRun(self, req: coordinator_pb2.WakeRunRequest, context: grpc.ServicerContext) -> common_pb2.Run:
        def work(cur: Cursor) -> common_pb2.Run:
            _waits.wake(cur, req.run_id)
            return _get_full(cur, req.run_id)
        return self._db.run(work)

    @_rpc
    def WatchRun(self, req: coordinator_pb2.WatchRunRequest, context: grpc.ServicerContext) -> Iterator[common_pb2.Run]:
        guard = StreamGuard(self._checker, context, self._config.auth_cache_seconds)
        with self._hub.watch("run:" + req.run_id) as changed:
            last: bytes | None = None
            while context.is_active():
                _end_if_revoked(guard)
                run = self._db.run(_get_full, req.run_id)
                data = run.SerializeToString(deterministic=True)
                if data != last:
                    last = data
                    yield run
                if run.status in _TERMINAL_VALUES:
                    return
                changed(WATCH_POLL)

    @_rpc
    def StreamLogs(self, req: coordinator_pb2.StreamLogsRequest, context: grpc.ServicerContext) -> Iterator[coordinator_pb2.LogChunk]:
        guard = StreamGuard(self._checker, context, self._config.auth_cache_seconds)
        with self._hub.watch("log:" + req.run_id) as logged, self._hub.watch("run:" + req.run_id) as changed:
            after = 0
            while context.is_active():
                _end_if_revoked(guard)
                rows, status = self._db.run(_logs_after, req.run_id, after)
                for r in rows:
                    after = r["id"]
                    t = Timestamp()
                    t.FromDatetime(r["time"])
                    yield coordinator_pb2.LogChunk(run_id=req.run_id, stream=r["stream"], data=bytes(r["data"]),
                                                   time=t, attempt=r["attempt"])
                if len(rows) == 500:
                    continue
                if not req.follow or status in TERMINAL:
                    return
                if not logged(0.25):
                    changed(0.0)

    @_rpc
    def ListAgents(self, req: coordinator_pb2.ListAgentsRequest, context: grpc.ServicerContext) -> coordinator_pb2.ListAgentsResponse:
        return self._db.run(_list_agents)

    @_rpc
    def SetEnv(self, req: coordinator_pb2.SetEnvRequest, context: grpc.ServicerContext) -> coordinator_pb2.ListEnvResponse:
        def work(cur: Cursor) -> coordinator_pb2.ListEnvResponse:
            project_env.set_vars(cur, self._keys(), req.project, dict(req.values), secret=req.secret)
            return project_env.listing(cur, req.project)
        out = self._db.run(work)
        log.info("project %s: set %s%s", req.project, ", ".join(sorted(req.values)), " (secret)" if req.secret else "")
        return out

    @_rpc
    def ListEnv(self, req: coordinator_pb2.ListEnvRequest, context: grpc.ServicerContext) -> coordinator_pb2.ListEnvResponse:
        return self._db.run(project_env.listing, req.project)

    @_rpc
    def UnsetEnv(self, req: coordinator_pb2.UnsetEnvRequest, context: grpc.ServicerContext) -> coordinator_pb2.ListEnvResponse:
        def work(cur: Cursor) -> coordinator_pb2.ListEnvResponse:
            project_env.unset(cur, req.project, list(req.names))
            return project_env.listing(cur, req.project)
        out = self._db.run(work)
        log.info("project %s: unset %s", req.project, ", ".join(req.names))
        return out

    @_rpc
    def PutEnvironment(self, chunks: Iterator[coordinator_pb2.EnvironmentChunk],
                       context: grpc.ServicerContext) -> coordinator_pb2.Environment:
        env = environments.receive(self._store, chunks, lambda env_id: self._db.run(environments.find, env_id))
        return self._db.run(environments.record, env)

    @_rpc
    def GetEnvironment(self, req: coordinator_pb2.GetEnvironmentRequest,
                       context: grpc.ServicerContext) -> coordinator_pb2.Environment:
        return self._db.run(environments.get, req.id)

    @_rpc
    def GetDeployment(self, req: coordinator_pb2.GetDeploymentRequest,
                      context: grpc.ServicerContext) -> coordinator_pb2.Deployment:
        return self._db.run(environments.deployment, req.version, req.project)


def _end_if_revoked(guard: StreamGuard) -> None:
    if guard.revoked():
        raise TorporError("the API key of this stream was revoked", code=ErrorCode.UNAUTHENTICATED)


_TERMINAL_VALUES = frozenset(common_pb2.RunStatus.Value(s) for s in TERMINAL)

"""The coordinator side of ``torpor.v1.AgentChannel``: one bidirectional stream per agent.

The stream's handler thread writes commands; a reader thread applies the
agent's reports in the order they were sent (a checkpoint is recorded before
the exit that follows it).
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from typing import Callable, Iterator

import grpc

from torpor._errors import ConfigError, LimitExceeded, TorporError
from torpor._logging import bind
from torpor._proto.v1 import agent_pb2, agent_pb2_grpc, common_pb2
from torpor._seal import Keyring
from torpor.coordinator import _outbox
from torpor.coordinator import _reports as reports
from torpor.coordinator._auth import KeyChecker, StreamGuard
from torpor.coordinator._config import CoordinatorConfig
from torpor.coordinator._db import Database, DatabaseError
from torpor.coordinator._states import TransitionError
from torpor.coordinator._triggers import NewRun, check_batch, create_runs

log = logging.getLogger(__name__)

_CLOSE = object()


# message kind -> (handler in _reports, whether it may free a slot or a run to place)
_REPORTS = {
    "run_started": (reports.run_started, False),
    "run_exited": (reports.run_exited, True),
    "checkpoint_recorded": (reports.checkpoint_recorded, False),
    "log": (reports.log_data, False),
    "wait_requested": (reports.wait_requested, False),
    "run_resumed": (reports.run_resumed, False),
    "token_registered": (reports.token_registered, False),
    "metadata": (reports.metadata, False),
    "command_failed": (reports.command_failed, True),
}
_NEED_MAX_FAILURES = (reports.run_exited, reports.command_failed)


class Session:
    def __init__(self, name: str) -> None:
        self.name = name
        self.id = uuid.uuid4().hex
        self.outq: queue.Queue[object] = queue.Queue()
        self.closed = threading.Event()
        self.sent_cmds: set[int] = set()  # outbox commands sent on this stream and not yet acknowledged

    def send(self, msg: agent_pb2.CoordinatorMessage) -> bool:
        if self.closed.is_set():
            return False
        self.outq.put(msg)
        return True

    def close(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            self.outq.put(_CLOSE)


class Sessions:
    """Agents whose stream ends at this coordinator."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_name: dict[str, Session] = {}

    def add(self, session: Session) -> None:
        with self._lock:
            old = self._by_name.get(session.name)
            self._by_name[session.name] = session
        if old is not None:
            old.close()

    def remove(self, session: Session) -> None:
        with self._lock:
            if self._by_name.get(session.name) is session:
                del self._by_name[session.name]

    def is_local(self, name: str) -> bool:
        with self._lock:
            return name in self._by_name

    def names(self) -> list[str]:
        with self._lock:
            return list(self._by_name)

    def send(self, name: str, msg: agent_pb2.CoordinatorMessage, session_id: str = "") -> bool:
        """Put ``msg`` on the agent's stream here; with ``session_id``, only if that is still its stream."""
        with self._lock:
            session = self._by_name.get(name)
        if session is None or session_id and session.id != session_id:
            return False
        return session.send(msg)

    def sent_cmds(self, name: str) -> set[int] | None:
        with self._lock:
            session = self._by_name.get(name)
        return session.sent_cmds if session is not None else None

    def close_all(self) -> None:
        with self._lock:
            sessions = list(self._by_name.values())
        for s in sessions:
            s.close()


def fence_seconds(lease: float) -> float:
    """How long an agent lets its containers run past the sending of its last confirmed renewal.

    The coordinator may give a run away only ``lease`` after it recorded a
    renewal, which is after the agent sent it; the fifth left over is the
    margin for the guard to notice and for the freeze to take hold
    (docs/coordinator.md, "Fencing").
    """
    return lease * 0.8


class AgentChannelServicer(agent_pb2_grpc.AgentChannelServicer):
    def __init__(self, db: Database, config: CoordinatorConfig, coordinator_id: str, sessions: Sessions,
                 on_connect: Callable[[str], None], wake: Callable[[], None], *, checker: KeyChecker | None = None,
                 snapshot_keys: Keyring) -> None:
        self._checker = checker
        self._snapshot_keys = [agent_pb2.SnapshotKey(id=k.id, key=k.key)
                               for k in (snapshot_keys.current, *snapshot_keys.older)]
        self._db = db
        self._config = config
        self._id = coordinator_id
        self._sessions = sessions
        self._on_connect = on_connect
        self._wake = wake

    def Connect(self, request_iterator: Iterator[agent_pb2.AgentMessage], context: grpc.ServicerContext) -> Iterator[agent_pb2.CoordinatorMessage]:
        try:
            first = next(request_iterator)
        except StopIteration:
            return
        if first.WhichOneof("msg") != "register":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message on the agent channel must be Register")
        reg = first.register
        if not reg.name or reg.slots < 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Register needs a name and a slot count of 0 or more")
        session = Session(reg.name)
        bind(agent=reg.name)
        fence = self._db.run(reports.register, self._id, session.id, reg, self._config.lease_seconds)
        self._sessions.add(session)
        log.info("agent %s connected with %d slots", reg.name, reg.slots)
        yield agent_pb2.CoordinatorMessage(registered=agent_pb2.Registered(
            lease_seconds=self._config.lease_seconds, heartbeat_seconds=self._config.heartbeat_seconds,
            fence_seconds=fence_seconds(self._config.lease_seconds), stale=reports.stale_refs(fence),
            snapshot_key=self._snapshot_keys[0], old_snapshot_keys=self._snapshot_keys[1:]))
        for msg in fence:
            yield msg
        reader = threading.Thread(target=self._read, args=(session, request_iterator), name=f"agent-{reg.name}", daemon=True)
        reader.start()
        self._on_connect(reg.name)
        self._wake()
        guard = StreamGuard(self._checker, context, self._config.auth_cache_seconds)
        try:
            while context.is_active():
                if guard.revoked():
                    log.warning("agent %s: its join token was revoked; closing its stream", reg.name)
                    context.abort(grpc.StatusCode.UNAUTHENTICATED, "this agent's join token was revoked")
                try:
                    item = session.outq.get(timeout=1.0)
                except queue.Empty:
                    continue
                if item is _CLOSE:
                    break
                yield item  # type: ignore[misc]
        finally:
            session.close()
            self._sessions.remove(session)
            try:
                self._db.run(reports.disconnected, reg.name, session.id)
            except TorporError:
                log.exception("could not record that agent %s disconnected", reg.name)
            log.info("agent %s disconnected", reg.name)

    def _read(self, session: Session, request_iterator: Iterator[agent_pb2.AgentMessage]) -> None:
        bind(agent=session.name)
        try:
            for msg in request_iterator:
                if session.closed.is_set():
                    return
                try:
                    for reply in self._handle(session, msg):
                        session.send(reply)
                except reports.Superseded:
                    log.warning("agent %s registered again elsewhere; closing this stream", session.name)
                    return
                except (DatabaseError, reports.ReportGap) as exc:
                    # Later reports must not overtake this one: end the stream; the agent reconnects and
                    # sends every report not yet acknowledged again, in order.
                    log.warning("agent %s: %s not applied (%s); closing the stream", session.name,
                                msg.WhichOneof("msg"), exc)
                    return
                except TransitionError as exc:
                    log.warning("agent %s: ignored %s: %s", session.name, msg.WhichOneof("msg"), exc)
                except TorporError as exc:
                    log.warning("agent %s: refused %s: %s", session.name, msg.WhichOneof("msg"), exc)
                except Exception:
                    log.exception("agent %s: handling %s failed", session.name, msg.WhichOneof("msg"))
        except grpc.RpcError:
            pass  # the stream ended under us
        except Exception:
            log.exception("agent %s: reader failed", session.name)
        finally:
            session.close()

    def _handle(self, session: Session, msg: agent_pb2.AgentMessage) -> list[agent_pb2.CoordinatorMessage]:
        kind = msg.WhichOneof("msg")
        cfg = self._config
        if kind == "heartbeat":
            return self._db.run(reports.heartbeat, session.name, session.id, msg.heartbeat, cfg.lease_seconds,
                                cfg.max_host_failures, self._id)
        if kind == "child_trigger":
            return [self._child_trigger(session.name, msg.child_trigger)]
        if kind == "command_ack":
            ids = list(msg.command_ack.cmd_ids)
            session.sent_cmds.difference_update(ids)
            return self._db.run(_outbox.acknowledged, session.name, ids)
        if kind not in _REPORTS:
            raise ConfigError("Register may only be the first message of a stream" if kind == "register"
                              else f"unknown agent message {kind!r}")
        handler, frees_slot = _REPORTS[kind]
        extra = ((cfg.max_host_failures,) if handler in _NEED_MAX_FAILURES
                 else (cfg.keep_checkpoints,) if handler is reports.checkpoint_recorded
                 else (cfg.log_budget_bytes,) if handler is reports.log_data else ())
        if msg.seq:
            out = self._db.run(reports.apply_once, session.name, session.id, msg.seq, handler, getattr(msg, kind),
                               *extra)
            out = [*out, agent_pb2.CoordinatorMessage(ack=agent_pb2.ReportAck(seq=msg.seq))]
        else:
            out = self._db.run(handler, session.name, getattr(msg, kind), *extra)
        if frees_slot:
            self._wake()
        return out

    def _child_trigger(self, agent: str, m: agent_pb2.ChildTrigger) -> agent_pb2.CoordinatorMessage:
        reply = agent_pb2.ChildTriggered(run=m.run, request_id=m.request_id)
        items = [
            NewRun(task=i.task, payload_json=i.payload_json or "null", idempotency_key=i.idempotency_key,
                   tags=list(i.tags), queue=i.queue, concurrency_key=i.concurrency_key, parent_run_id=m.run.run_id)
            for i in m.items
        ]
        try:
            check_batch(items, self._config.limits)
            created = self._db.run(_create_children, agent, m.run, items, self._config)
            reply.run_ids.extend(created)
        except TorporError as exc:
            reply.error = exc.message
            if isinstance(exc, LimitExceeded):
                reply.limit.CopyFrom(common_pb2.LimitExceeded(what=exc.what, limit=exc.limit, actual=exc.actual,
                                                              setting=exc.setting))
        return agent_pb2.CoordinatorMessage(child_triggered=reply)


def _create_children(cur, agent: str, ref: agent_pb2.RunRef, items: list[NewRun], config: CoordinatorConfig) -> list[str]:
    # _current locks the parent's row: two triggers of one run count its children one after the other.
    if reports._current(cur, agent, ref) is None:
        raise ConfigError(f"run {ref.run_id} generation {ref.generation} is not current on {agent}")
    cur.execute("SELECT count(*) AS n FROM runs WHERE parent_run_id = %s", (ref.run_id,))
    before = cur.fetchone()["n"]
    created = create_runs(cur, items, config.limits)
    new = sum(1 for _, existing in created if not existing)  # an idempotency key's existing run is no new child
    limit = config.limits.max_children
    if before + new > limit:
        # Raised inside the transaction: the runs just inserted roll back with it.
        raise LimitExceeded(
            f"this run has triggered {before:,} child runs and asked for {new:,} more; at most {limit:,} are "
            "allowed per run (torpor coordinator --max-children). Nothing was triggered by this call",
            what="children", limit=limit, actual=before + new, setting="torpor coordinator --max-children")
    return [row["id"] for row, _ in created]

"""One run on this agent: its container, its runtime socket, its pending waits.

The agent daemon owns a ``RunSlot`` per run it holds and turns runtime requests
from the task into messages to the coordinator (``send``) and back.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

from torpor._proto.v1 import agent_pb2 as ap
from torpor._proto.v1 import runtime_pb2 as rt
from torpor._sizes import format_size
from torpor.agent._alarms import ALARMS
from torpor.agent._bounds import AgentBounds, too_many_waits
from torpor.agent._containers import Container
from torpor.agent._logs import LogRelay
from torpor.agent._runtime_server import RuntimeServer

log = logging.getLogger(__name__)

Send = Callable[[ap.AgentMessage], object]
TOKEN_CONFIRM_SECONDS = 60.0
REPORTED_SECONDS = 120.0
"""How long a request of the task waits for the agent to report the run started (see ``RunSlot.reported``)."""
# Requests that make the agent tell the coordinator something about the run.
_REPORTING = frozenset({"wait", "checkpoint", "trigger", "create_token", "metadata"})


@dataclass
class Outcome:
    result_json: str = ""
    timed_out: bool = False

    @classmethod
    def of(cls, resolved: ap.WaitResolved) -> "Outcome":
        """The outcome a coordinator's WaitResolved (or a RestoreRun's wake) carries."""
        return cls(result_json=resolved.result_json, timed_out=resolved.timed_out)


@dataclass(eq=False)
class RunSlot:
    spec: ap.RunSpec
    send: Send
    suspend_threshold: float
    request_checkpoint: Callable[["RunSlot", str], None]
    """Called (in a worker thread) to take a leave-running checkpoint for a wait id."""
    send_confirmed: Callable[[ap.AgentMessage, float], bool] | None = None
    """Send a report and wait until the coordinator committed it (None: just send)."""
    bounds: AgentBounds = field(default_factory=AgentBounds)
    """What this run may make the agent hold (open waits here; the runtime server checks the rest)."""
    logs: LogRelay | None = None
    """Takes the container's output to the outbox (None: logs go nowhere, as in some tests)."""
    container: Container | None = None
    server: RuntimeServer | None = None
    # wait_id -> None while pending, Outcome once resolved
    waits: dict[str, Outcome | None] = field(default_factory=dict)
    result: rt.RuntimeResult | None = None
    suspending: bool = False
    stopping: str = ""  # why the agent is ending the container ("killed", "suspended", ...)
    lock: threading.RLock = field(default_factory=threading.RLock)
    dump_lock: threading.Lock = field(default_factory=threading.Lock)
    """Serialises dumps of this run; never held together with ``lock`` by a dump."""
    _triggers: dict[str, Future[ap.ChildTriggered]] = field(default_factory=dict)
    _checkpoints: list[str] = field(default_factory=list)
    """Wait ids of torpor.checkpoint() calls not yet taken, served in order by one thread."""
    resolved_while_dumping: ap.WaitResolved | None = None
    """A WaitResolved that came while a suspension dump was under way (under ``lock``). Left to the coordinator's
    restore if the dump succeeds; applied here if it fails, since the coordinator will not send it again."""
    reported: threading.Event = field(default_factory=threading.Event)
    """Set once RunStarted is in the outbox. The task runs before that (runc and CRIU let it go before they
    return), and a thread of a restored task may ask for a wait at once: sent first, the coordinator, which
    still sees the run STARTING or RESTORING, would ignore it and the task would wait forever. So every
    request that reports something waits for this, and the outbox keeps the order (docs/coordinator.md,
    "What each side does before the other may act")."""

    @property
    def run_id(self) -> str:
        return self.spec.run.run_id

    @property
    def generation(self) -> int:
        return self.spec.run.generation

    def ref(self) -> ap.RunRef:
        return ap.RunRef(run_id=self.run_id, generation=self.generation)

    # -- waking the task -------------------------------------------------------

    def wake(self) -> None:
        c = self.container
        if c is not None and c.running and c.pid > 0:  # never kill(0): that signals the agent's own group
            try:
                os.kill(c.pid, signal.SIGUSR1)
            except ProcessLookupError:
                pass

    def resolve(self, wait_id: str, outcome: Outcome) -> bool:
        """Record a wait's outcome and wake the task; False if that wait is not pending here."""
        with self.lock:
            if wait_id not in self.waits or self.waits[wait_id] is not None:
                return False
            self.waits[wait_id] = outcome
        self.wake()
        return True

    # -- runtime requests --------------------------------------------------------

    def report_started(self, msg: ap.AgentMessage) -> None:
        """Send the RunStarted report, then let the task's held requests go after it."""
        self.send(msg)
        self.reported.set()

    def _until_reported(self) -> rt.RuntimeResponse | None:
        """Hold a request until the run's start is reported; a refusal if it never is (the run is ending)."""
        give_up = time.monotonic() + REPORTED_SECONDS
        while not self.reported.wait(0.1):
            if self.stopping or time.monotonic() > give_up:
                return rt.RuntimeResponse(error=f"run {self.run_id} is {self.stopping or 'not reported started'} "
                                                "on this agent; the request was not sent")
        return None

    def handle(self, req: rt.RuntimeRequest) -> rt.RuntimeResponse:
        kind = req.WhichOneof("msg")
        if kind in _REPORTING and (held := self._until_reported()) is not None:
            return held
        if kind == "context":
            s = self.spec
            return rt.RuntimeResponse(context=rt.RunContext(
                run_id=s.run.run_id, task_id=s.task, attempt=s.attempt, version=s.version,
                started_at_unix=s.started_at_unix, payload_json=s.payload_json, module=s.settings.module,
                function=s.settings.function, generation=s.run.generation,
            ))
        if kind == "wait":
            return self._wait(req.wait)
        if kind == "wait_result":
            with self.lock:
                wait_id = req.wait_result.wait_id
                if wait_id not in self.waits:
                    # Restored here from a checkpoint taken while the task waited: it asks again.
                    return rt.RuntimeResponse(wait_outcome=rt.WaitOutcome(ready=False, unknown=True))
                outcome = self.waits[wait_id]
                if outcome is None:
                    return rt.RuntimeResponse(wait_outcome=rt.WaitOutcome(ready=False))
                del self.waits[wait_id]
            return rt.RuntimeResponse(wait_outcome=rt.WaitOutcome(
                ready=True, result_json=outcome.result_json, timed_out=outcome.timed_out))
        if kind == "checkpoint":
            wait_id = req.checkpoint.wait_id
            if req.checkpoint.after_restore:
                # The image this process runs from is a durable checkpoint: torpor.checkpoint() is done.
                with self.lock:
                    if (refused := self._open_wait(wait_id)) is not None:
                        return refused
                    self.waits[wait_id] = Outcome(result_json="true")
                return rt.RuntimeResponse(wait_accepted=rt.WaitAccepted(resolved=True))
            with self.lock:
                if (refused := self._open_wait(wait_id)) is not None:
                    return refused
                self._checkpoints.append(wait_id)
                if len(self._checkpoints) == 1:  # no worker under way: start one
                    threading.Thread(target=self._take_checkpoints, daemon=True,
                                     name=f"checkpoint-{self.run_id}").start()
            return rt.RuntimeResponse(wait_accepted=rt.WaitAccepted(resolved=False))
        if kind == "trigger":
            return self._trigger(req.trigger)
        if kind == "create_token":
            token_id = f"tok_{uuid.uuid4().hex}"
            timeout = req.create_token.timeout_seconds
            msg = ap.AgentMessage(token_registered=ap.TokenRegistered(
                run=self.ref(), token_id=token_id, timeout_unix=time.time() + timeout if timeout else 0))
            # The token exists once create_token returns: whoever the task hands it to may complete it at once.
            if self.send_confirmed is None:
                self.send(msg)
            elif not self.send_confirmed(msg, TOKEN_CONFIRM_SECONDS):
                return rt.RuntimeResponse(error=f"the coordinator did not record token {token_id} within "
                                                f"{TOKEN_CONFIRM_SECONDS:.0f} s; try again")
            return rt.RuntimeResponse(token=rt.TokenCreated(token_id=token_id))
        if kind == "metadata":
            self.send(ap.AgentMessage(metadata=ap.MetadataUpdate(run=self.ref(), metadata_json=req.metadata.metadata_json)))
            return rt.RuntimeResponse(ok=rt.Empty())
        if kind == "result":
            self.result = req.result
            return rt.RuntimeResponse(ok=rt.Empty())
        return rt.RuntimeResponse(error=f"unknown runtime request {kind!r}")

    def _open_wait(self, wait_id: str) -> rt.RuntimeResponse | None:
        """Record a pending wait (under ``lock``); a refusal when the run has too many open already."""
        if wait_id not in self.waits and len(self.waits) >= self.bounds.max_open_waits:
            return too_many_waits(len(self.waits), self.bounds.max_open_waits)
        self.waits[wait_id] = None
        return None

    def _take_checkpoints(self) -> None:
        """One thread per run takes the checkpoints the task asked for, one after the other."""
        with self.lock:
            wait_id = self._checkpoints[0]
        while True:
            try:
                self.request_checkpoint(self, wait_id)
            except Exception:  # noqa: BLE001 - the next request is still served
                log.exception("checkpoint asked by the task failed")
            with self.lock:
                # Taken off only now, and the next looked for in the same breath: a request arriving
                # while the list is not empty never starts a second worker.
                self._checkpoints.pop(0)
                if not self._checkpoints:
                    return
                wait_id = self._checkpoints[0]

    def _wait(self, w: rt.RuntimeWait) -> rt.RuntimeResponse:
        with self.lock:
            if (refused := self._open_wait(w.wait_id)) is not None:
                return refused
        which = w.WhichOneof("kind")
        if which == "until_unix":
            delay = w.until_unix - time.time()
            if delay < self.suspend_threshold:
                # Served in place: too short to be worth a dump and a restore.
                outcome = Outcome(result_json="null")
                ALARMS.after(delay, lambda: self.resolve(w.wait_id, outcome))
                return rt.RuntimeResponse(wait_accepted=rt.WaitAccepted(resolved=False))
            msg = ap.WaitRequested(run=self.ref(), wait_id=w.wait_id, until_unix=w.until_unix)
        elif which == "token_id":
            msg = ap.WaitRequested(run=self.ref(), wait_id=w.wait_id,
                                   token=ap.TokenWait(token_id=w.token_id, timeout_unix=w.token_timeout_unix))
        elif which == "children":
            msg = ap.WaitRequested(run=self.ref(), wait_id=w.wait_id,
                                   children=ap.ChildrenWait(run_ids=list(w.children.run_ids)))
        else:
            return rt.RuntimeResponse(error="a wait needs a duration, a token or child runs")
        self.send(ap.AgentMessage(wait_requested=msg))
        return rt.RuntimeResponse(wait_accepted=rt.WaitAccepted(resolved=False))

    def _trigger(self, t: rt.RuntimeTrigger) -> rt.RuntimeResponse:
        request_id = uuid.uuid4().hex
        fut: Future[ap.ChildTriggered] = Future()
        with self.lock:
            self._triggers[request_id] = fut
        items = [ap.TriggerItem(task=i.task, payload_json=i.payload_json, idempotency_key=i.idempotency_key,
                                tags=list(i.tags)) for i in t.items]
        self.send(ap.AgentMessage(child_trigger=ap.ChildTrigger(run=self.ref(), request_id=request_id, items=items)))
        try:
            answer = fut.result(timeout=120)
        except TimeoutError:
            return rt.RuntimeResponse(error="the coordinator did not answer the trigger within 120 s")
        finally:
            with self.lock:
                self._triggers.pop(request_id, None)
        if answer.error:
            return rt.RuntimeResponse(error=answer.error, limit=answer.limit if answer.HasField("limit") else None)
        return rt.RuntimeResponse(triggered=rt.TriggeredRuns(run_ids=list(answer.run_ids)))

    def child_triggered(self, msg: ap.ChildTriggered) -> None:
        with self.lock:
            fut = self._triggers.get(msg.request_id)
        if fut is not None and not fut.done():
            fut.set_result(msg)

    def flush_logs(self) -> None:
        """The container's output ended: what the outbox could not take is accounted for before the exit."""
        if self.logs is not None:
            self.logs.flush()

    def exit_message(self, code: int, *, oom: bool = False) -> ap.AgentMessage:
        """The RunExited report of the container's end (the logs' last marker goes first)."""
        self.flush_logs()
        res = self.result
        exited = ap.RunExited(run=self.ref(), exit_code=code)
        if res is not None:
            exited.has_result = True
            exited.output_json = res.output_json if res.ok else ""
            exited.error = "" if res.ok else (res.error or "task failed")
            exited.traceback = res.traceback
            exited.final = res.final and not res.ok
        else:
            # 137 = SIGKILL that the agent did not send: the OOM killer if its cgroup said so (agent/_oom.py).
            exited.reason = self.stopping or ("oom" if oom else "killed" if code == 137 else "crashed")
            exited.error = (f"the task used more memory than its limit ({format_size(self.spec.settings.memory_bytes)}) "
                            "and the kernel killed it" if oom and self.spec.settings.memory_bytes else
                            "the kernel's OOM killer ended the task (it has no memory limit: the host ran out)"
                            if oom else f"the task's process ended with exit status {code} before reporting a result")
        return ap.AgentMessage(run_exited=exited)


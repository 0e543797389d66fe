"""The agent's checkpoint commands: suspend, on-demand, periodic and task-asked dumps of a run.

A part of the agent daemon (_daemon.Agent inherits it), kept apart because it
is one concern: pausing the run's runtime socket, dumping with CRIU through
the container manager (never while the lease is lapsed and the containers
frozen), resuming the socket, and reporting the checkpoint.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from torpor import _faults
from torpor._proto.v1 import agent_pb2 as ap
from torpor._proto.v1 import common_pb2 as cm
from torpor.agent._runs import Outcome, RunSlot

if TYPE_CHECKING:
    from torpor.agent._containers import ContainerManager
    from torpor.agent._fence import Fence
    from torpor.agent._outbox import Outbox

log = logging.getLogger(__name__)


class CheckpointCommands:
    # Provided by the daemon (_daemon.Agent).
    mgr: "ContainerManager"
    outbox: "Outbox"
    fence: "Fence"
    runs: dict[str, RunSlot]
    stopped: threading.Event

    if TYPE_CHECKING:
        from torpor.agent._daemon import DaemonConfig

        config: DaemonConfig

        def send(self, msg: ap.AgentMessage) -> None: ...
        def _slot(self, run: ap.RunRef, what: str) -> RunSlot | None: ...
        def _drop(self, slot: RunSlot) -> None: ...
        def _resume_if_paused(self, container_id: str) -> None: ...

    def _on_suspend(self, body: ap.SuspendRun) -> None:
        slot = self._slot(body.run, "suspend")
        if slot is None or slot.container is None:
            return
        with slot.lock:
            if slot.waits.get(body.wait_id, "gone") is not None:
                return  # resolved (or never asked here) before the go-ahead arrived: nothing to dump
            slot.suspending = True
        try:
            with slot.dump_lock:
                manifest = self._dump(slot, kind=cm.SUSPEND, leave_running=False)
        except BaseException:
            with slot.lock:
                slot.suspending = False
                late, slot.resolved_while_dumping = slot.resolved_while_dumping, None
            container = slot.container
            if slot.stopping or not container.running:
                # Killed (canceled) while the dump was being prepared: the exit
                # watcher left the report to us, since a suspend was under way.
                self.send(slot.exit_message(container.wait()))
                self._drop(slot)
                return
            if slot.server is not None:
                slot.server.start()
            if late is not None and slot.resolve(late.wait_id, Outcome.of(late)):
                # Resolved while the dump ran: the run stays here, so the task is woken here.
                self.send(ap.AgentMessage(run_resumed=ap.RunResumed(run=slot.ref(), wait_id=late.wait_id)))
            raise
        self.send(ap.AgentMessage(checkpoint_recorded=ap.CheckpointRecorded(run=slot.ref(), checkpoint=manifest)))
        slot.flush_logs()
        self.send(ap.AgentMessage(run_exited=ap.RunExited(run=slot.ref(), exit_code=0, reason="suspended")))
        self._drop(slot)

    def _dump(self, slot: RunSlot, *, kind: int, leave_running: bool) -> cm.Checkpoint:
        assert slot.container is not None and slot.server is not None
        if not slot.server.pause(timeout=self.config.drain_timeout):
            slot.server.start()
            raise RuntimeError("the task kept a runtime connection open; the checkpoint was not taken")
        t0 = time.monotonic()
        try:
            _faults.hit("agent.before_dump")
            if slot.stopping:
                raise RuntimeError(f"run {slot.run_id} is being stopped ({slot.stopping}); no checkpoint taken")
            if self.fence.freezer.frozen():
                # CRIU would find the container frozen and leave it frozen (its own cgroup) after the dump,
                # under a parent that a later renewal thaws: the run would never go on.
                raise RuntimeError("this agent's lease lapsed and its containers are frozen; no checkpoint taken")
            kinds = {cm.SUSPEND: "suspend", cm.PERIODIC: "periodic", cm.ON_DEMAND: "on_demand"}
            manifest = self.mgr.checkpoint(slot.container, kind=kinds[kind], leave_running=leave_running,
                                           deployment_version=slot.spec.version)
        except BaseException:
            if leave_running:
                slot.server.start()  # the task goes on: its runtime calls must be answered again
            raise
        if leave_running:
            self._resume_if_paused(slot.container.id)  # fenced just as CRIU began: see _unpause
            slot.server.start()
        _faults.hit("agent.before_record")
        return cm.Checkpoint(
            id=manifest.checkpoint_id, kind=kind, size_bytes=manifest.archive_size, raw_bytes=manifest.raw_bytes,
            duration_ms=int((time.monotonic() - t0) * 1000), agent=self.config.name, location=manifest.key,
            generation=slot.generation, key_id=manifest.encryption.kek_id if manifest.encryption else "",
            network=manifest.network,
        )

    def _on_checkpoint(self, body: ap.CheckpointCommand) -> None:
        slot = self._slot(body.run, "checkpoint")
        if slot is None or slot.container is None:
            raise RuntimeError(f"run {body.run.run_id} is not running on agent {self.config.name}")
        if not self._checkpoint_running(slot, body.kind or cm.ON_DEMAND, request_id=body.request_id):
            raise RuntimeError(f"run {body.run.run_id} is being suspended; no checkpoint taken")

    def _checkpoint_running(self, slot: RunSlot, kind: int, request_id: str = "", *, confirm: bool = False) -> bool:
        """A leave-running checkpoint, reported to the coordinator; False if the run is being suspended.

        ``confirm``: return only once the coordinator has committed the record (``torpor.checkpoint()``
        must not return to a task whose checkpoint a cut-off agent never got recorded: the run would be
        restored from an older one than the task saw returned). Waits as long as the run is here.
        """
        with slot.dump_lock:
            if slot.suspending:
                return False
            ckpt = self._dump(slot, kind=kind, leave_running=True)
        seq = self.outbox.send(ap.AgentMessage(checkpoint_recorded=ap.CheckpointRecorded(
            run=slot.ref(), checkpoint=ckpt, request_id=request_id)))
        _faults.hit("agent.checkpoint_sent")
        while confirm and not self.outbox.wait_acked(seq, 1.0):
            if self.stopped.is_set() or self.runs.get(slot.run_id) is not slot:
                return False  # the run left this agent (killed, fenced, moved): the task is gone or frozen
        return True

    def _checkpoint_for_task(self, slot: RunSlot, wait_id: str) -> None:
        """``torpor.checkpoint()`` from task code: dump (leave running), then wake the task."""
        try:
            recorded = self._checkpoint_running(slot, cm.ON_DEMAND, confirm=True)
            slot.resolve(wait_id, Outcome(result_json="true" if recorded else "false"))
        except Exception as exc:
            log.exception("checkpoint asked by the task failed")
            slot.resolve(wait_id, Outcome(result_json="false"))
            self.send(ap.AgentMessage(command_failed=ap.CommandFailed(run=slot.ref(), command="checkpoint",
                                                                      error=str(exc)[:4000])))

    def _periodic(self, slot: RunSlot) -> None:
        every = slot.spec.settings.checkpoint_every
        while slot.container is not None and slot.container.running:
            if self.stopped.wait(every):
                return
            container = slot.container
            if container is None or not container.running or slot.suspending or self.runs.get(slot.run_id) is not slot:
                return
            try:
                if not self._checkpoint_running(slot, cm.PERIODIC):
                    return
            except Exception:
                log.exception("periodic checkpoint failed")

"""The agent's launch commands: StartRun and RestoreRun, from the command to RunStarted.

A part of the agent daemon (_daemon.Agent inherits it), kept apart because it
is one concern: the run is held from the moment its command is read, its
code, packages and secrets are made ready, the container is started or
restored (never while the lease is lapsed), and the start is reported; a
checkpoint that cannot be restored is named so the coordinator tries an
older one, and a run this agent can never run is refused.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from torpor import _faults
from torpor._errors import CriuError, IntegrityError, MissingKeyError, NotFoundError
from torpor._proto.v1 import agent_pb2 as ap
from torpor._secretbox import open_run_env
from torpor.agent import _bundle
from torpor.agent._environments import WrongPython
from torpor.agent._logs import LogBudget, LogRelay
from torpor.agent._oci import Limits
from torpor.agent._runs import Outcome, RunSlot
from torpor.agent._runtime_server import RuntimeServer

if TYPE_CHECKING:
    from torpor.agent._containers import ContainerManager
    from torpor.agent._environments import Environments
    from torpor.agent._fence import Fence
    from torpor.agent._outbox import Outbox
    from torpor.store import Store

log = logging.getLogger(__name__)

ENTRYPOINT = ["-m", "torpor.sdk._entry"]


class LaunchCommands:
    # Provided by the daemon (_daemon.Agent).
    mgr: "ContainerManager"
    outbox: "Outbox"
    fence: "Fence"
    envs: "Environments"
    store: "Store"
    runs: dict[str, RunSlot]
    lock: threading.RLock
    stopped: threading.Event
    lease_seconds: float

    if TYPE_CHECKING:
        from torpor.agent._daemon import DaemonConfig

        config: DaemonConfig
        runtime_gate: object

        def send(self, msg: ap.AgentMessage) -> None: ...
        def _drop(self, slot: RunSlot) -> None: ...
        def _kill(self, slot: RunSlot, reason: str) -> None: ...
        def _watch(self, slot: RunSlot) -> None: ...
        def _checkpoint_for_task(self, slot: RunSlot, wait_id: str) -> None: ...

    def _limits(self, spec: ap.RunSpec) -> Limits:
        s = spec.settings
        return Limits(memory_bytes=s.memory_bytes, cpus=s.cpus, pids=s.pids_limit or 512)

    def _app_dir(self, spec: ap.RunSpec) -> Path:
        return _bundle.fetch(self.store, spec.version, self.mgr.state / "bundles")

    def _deps_dir(self, spec: ap.RunSpec) -> Path | None:
        if not spec.environment_id:
            return None
        return self.envs.get(spec.environment_id, spec.environment_sha256, spec.environment_python,
                             spec.environment_location)

    def _new_slot(self, spec: ap.RunSpec) -> RunSlot:
        slot = RunSlot(spec=spec, send=self.send, suspend_threshold=self.config.suspend_threshold,
                       request_checkpoint=self._checkpoint_for_task, send_confirmed=self.outbox.send_confirmed,
                       bounds=self.config.bounds, logs=LogRelay(self.outbox.send_log, spec.run, spec.attempt))
        with self.lock:
            old = self.runs.get(spec.run.run_id)
            if old is not None and old.generation >= spec.run.generation:
                raise RuntimeError(f"run {spec.run.run_id} is already held here at generation {old.generation}")
            self.runs[spec.run.run_id] = slot
        if old is not None:  # a newer generation replaces a stale copy: fencing
            self._kill(old, "stale_generation")
        return slot

    def _serve(self, slot: RunSlot):  # type: ignore[no-untyped-def]
        def before_launch(socket_dir: Path) -> None:
            self._may_launch(slot)
            slot.server = RuntimeServer(socket_dir, slot.handle, name=slot.run_id, bounds=self.config.bounds,
                                        gate=self.runtime_gate)
            slot.server.start()
        return before_launch

    def _may_launch(self, slot: RunSlot) -> None:
        """Right before runc starts or restores: not while fenced, and never a run given away meanwhile.

        A start or restore that was under way while this agent could not renew
        (hung, cut off) waits for the next confirmed renewal, which names the
        run stale if the coordinator gave it away: then nothing is launched.
        """
        give_up = time.monotonic() + 2 * self.lease_seconds
        while self.fence.freezer.frozen() and not slot.stopping and time.monotonic() < give_up:
            if self.stopped.wait(0.05):
                break
        if slot.stopping or self.fence.freezer.frozen():
            raise RuntimeError(f"run {slot.run_id} generation {slot.generation} was not launched: "
                               f"{slot.stopping or 'this agent holds no lease'}")

    def _on_start(self, body: ap.StartRun, slot: RunSlot | None = None) -> None:
        spec = body.spec
        # Held (and so in every heartbeat's list) from now on, even while the
        # bundle downloads: the coordinator counts an unlisted run as lost.
        slot = slot if slot is not None else self._new_slot(spec)
        try:
            app = self._app_dir(spec)
            deps = self._deps_dir(spec)
            env = open_run_env(self.mgr.keys, spec)  # the project's variables; its secrets opened here
            slot.container = self.mgr.start(run_id=spec.run.run_id, args=[self.mgr.config.python, *ENTRYPOINT],
                                            app_dir=app, env=env, limits=self._limits(spec), deps_dir=deps,
                                            before_launch=self._serve(slot),
                                            network=spec.settings.network or None,
                                            log_budget=LogBudget.of(spec, self.config.bounds))
        except WrongPython as exc:
            self._refuse(slot, "start", exc)
            return
        except BaseException:
            self._drop(slot)
            raise
        if slot.stopping:  # named stale while runc started it: it must not go on
            self.mgr.runc.kill(slot.container.id, "KILL", every_process=True)
        slot.report_started(ap.AgentMessage(run_started=ap.RunStarted(run=slot.ref())))
        self._watch(slot)

    def _on_restore(self, body: ap.RestoreRun, slot: RunSlot | None = None) -> None:
        spec = body.spec
        slot = slot if slot is not None else self._new_slot(spec)
        _faults.hit("agent.before_restore")
        if body.HasField("wake") and body.wake.wait_id:
            slot.waits[body.wake.wait_id] = Outcome.of(body.wake)
        t0 = time.monotonic()
        # The code and the packages are fetched before the snapshot, outside the block below that blames the
        # checkpoint: an environment missing or damaged in the store is not the checkpoint's fault, and taking
        # it for one would release intact checkpoints.
        try:
            app = self._app_dir(spec)
            deps = self._deps_dir(spec)
        except WrongPython as exc:
            self._refuse(slot, "restore", exc)
            return
        except BaseException:
            self._drop(slot)
            raise
        try:
            slot.container = self.mgr.restore(body.checkpoint_location, app_dir=app, limits=self._limits(spec),
                                              deps_dir=deps,
                                              before_launch=self._serve(slot), network=spec.settings.network or None,
                                              log_budget=LogBudget.of(spec, self.config.bounds),
                                              sealed_under=body.checkpoint_key_id or None)
        except (IntegrityError, NotFoundError, CriuError) as exc:
            # The checkpoint is at fault, not this host: say which, so the coordinator tries an older one. A
            # missing snapshot key is the configuration's fault: the checkpoint is kept and tried again later.
            self._drop(slot)
            no_key = isinstance(exc, MissingKeyError)
            log.error("checkpoint %s of run %s cannot be restored: %s", body.checkpoint_id, spec.run.run_id, exc)
            self.send(ap.AgentMessage(command_failed=ap.CommandFailed(
                run=slot.ref(), command="restore", error=str(exc)[:4000], snapshot_key_missing=no_key,
                bad_checkpoint_id="" if no_key else body.checkpoint_id)))
            return
        except BaseException:
            self._drop(slot)
            raise
        restore_ms = int((time.monotonic() - t0) * 1000)
        if slot.stopping:  # named stale while CRIU restored it: it must not go on
            self.mgr.runc.kill(slot.container.id, "KILL", every_process=True)
        _faults.hit("agent.before_restored_report")
        slot.report_started(ap.AgentMessage(run_started=ap.RunStarted(
            run=slot.ref(), restored=True, checkpoint_id=body.checkpoint_id, restore_ms=restore_ms)))
        # Always: a task restored from a checkpoint taken while it waited (torpor.checkpoint(), a short
        # in-place wait, a wait not yet suspended) asks this agent for its outcome, hears the wait is
        # unknown here and sends it again. A task that was not waiting ignores the signal.
        slot.wake()
        self._watch(slot)

    def _refuse(self, slot: RunSlot, command: str, exc: WrongPython) -> None:
        """A run this agent can never run (its packages are for another Python): the coordinator ends it."""
        self._drop(slot)
        log.error("run %s refused: %s", slot.run_id, exc)
        self.send(ap.AgentMessage(command_failed=ap.CommandFailed(
            run=slot.ref(), command=command, error=str(exc)[:4000], environment_refused=True)))

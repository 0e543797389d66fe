"""The agent daemon: one bidirectional gRPC stream to a coordinator, runs in containers.

Commands from the coordinator run in worker threads so a long dump never
stalls the stream; everything the agent reports goes through one outgoing
queue, which survives reconnects. Starting and restoring runs is in
agent/_launches.py, dumping them in agent/_checkpoints.py (mixins of Agent).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import platform
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc
import psutil

from torpor import _faults
from torpor._errors import ConfigError, StoreError
from torpor._logging import bind
from torpor._proto.v1 import agent_pb2 as ap
from torpor._proto.v1 import agent_pb2_grpc as ag
from torpor._proto.v1 import common_pb2 as cm
from torpor._seal import keyring_of
from torpor.agent import _hygiene
from torpor.agent._bounds import AgentBounds
from torpor.agent._checkpoints import CheckpointCommands
from torpor.agent._environments import Environments, python_version
from torpor.agent._containers import AgentConfig, ContainerManager
from torpor.agent._fence import Fence, Freezer
from torpor.agent._fence import now as fence_clock
from torpor.agent._launches import LaunchCommands
from torpor.agent._outbox import Outbox
from torpor.agent._runc import Runc
from torpor.agent._runs import Outcome, RunSlot
from torpor.store import Store

log = logging.getLogger(__name__)

@dataclass(frozen=True, kw_only=True)
class DaemonConfig:
    name: str
    """This agent's name, unique in the fleet (default: the host name)."""
    coordinator: str
    """host:port of a coordinator."""
    join_token: str
    """Secret that lets this agent join (``torpor keys create --kind agent``)."""
    slots: int = 4
    """Runs this host executes at once."""
    labels: dict[str, str] = field(default_factory=dict)
    """Free-form labels reported to the coordinator."""
    suspend_threshold: float = 5.0
    """Waits shorter than this many seconds are served in place, without a dump."""
    tls_ca: bytes | None = None
    """PEM of the CA that signed the coordinator's certificate; None = plaintext."""
    drain_timeout: float = 60.0
    """Seconds a dump waits for the task to close its runtime connections."""
    bundle_ttl: float = 24 * 3600.0
    """Seconds a cached deployment bundle no run here has used is kept before it is removed."""
    env_ttl: float = 24 * 3600.0
    """Seconds an unpacked environment (a deployment's packages) no run here has used is kept before removal."""
    bounds: AgentBounds = field(default_factory=AgentBounds)
    """What one run may make this agent hold: request sizes, connections, open waits, log bytes."""
    memory_bytes: int = 0
    """Memory offered to runs, which the coordinator fills with their memory limits; 0 = the host's total."""


class Agent(CheckpointCommands, LaunchCommands):
    def __init__(self, config: DaemonConfig, *, containers: AgentConfig, runc: Runc, store: Store) -> None:
        self.config = config
        self.store = store
        # Snapshot keys arrive with Registered (memory only, never on disk); until then no checkpoint is taken.
        self.mgr = ContainerManager(containers, runc=runc, store=store, keys=None, log_sink=self._on_log)
        self.envs = Environments(store, self.mgr.state / "envs", python_version(containers.python))
        self.runs: dict[str, RunSlot] = {}
        self.lock = threading.RLock()
        self.outbox = Outbox(log_bytes=config.bounds.outbox_log_bytes)
        self.runtime_gate = threading.BoundedSemaphore(config.bounds.connections_total)  # shared by all runs
        self.pool = ThreadPoolExecutor(max_workers=max(4, config.slots * 2), thread_name_prefix="agent-cmd")
        self.stopped = threading.Event()
        self.connected = threading.Event()
        self.heartbeat_seconds = 2.0
        self.lease_seconds = 15.0  # the coordinator's, from Registered
        self._call: grpc.Future | None = None  # type: ignore[type-arg]
        self._register_sent = 0.0
        self.fence = Fence(self.mgr.state, Freezer(self.mgr.cgroup_parent))
        self.fence.stop_old_guard()
        self.reap_orphans()
        self.fence.start()
        threading.Thread(target=self._watch_lease, daemon=True, name="lease-fence").start()

    def reap_orphans(self) -> list[str]:
        """Kill the containers an earlier instance of this agent left behind.

        This agent cannot supervise them (their log pipes and runtime sockets
        belonged to the old process). It registers holding nothing, so the
        coordinator restores those runs from their latest checkpoint
        elsewhere; killing the leftovers first keeps any run from ever having
        two live copies.
        """
        reaped = []
        leftovers = self.mgr.runc.list()
        for st in leftovers:
            log.warning("killing container %s left by an earlier agent process; the coordinator restores its run "
                        "from the latest checkpoint", st.id)
            # Frozen by the old guard, perhaps: the SIGKILL waits, and takes effect at the thaw before any of the
            # container's own code runs again.
            self.mgr.runc.kill(st.id, "KILL", every_process=True)
        self.fence.freezer.thaw()
        for st in leftovers:
            self.mgr.runc.delete(st.id)
            reaped.append(st.id)
        for sub in ("containers", "sockets"):
            for leftover in (self.mgr.state / sub).iterdir():
                shutil.rmtree(leftover, ignore_errors=True)
        _hygiene.reap_scratch(self.mgr.state, self.mgr.images, self.mgr.runtime_dir)
        _hygiene.gc_bundles(self.mgr.state / "bundles", set(), self.config.bundle_ttl)
        self.envs.reap_leftovers()
        self.envs.collect(set(), self.config.env_ttl)
        return reaped

    # -- outgoing --------------------------------------------------------------

    def send(self, msg: ap.AgentMessage) -> None:
        self.outbox.send(msg)

    def _on_log(self, run_id: str, stream: str, data: bytes, dropped: int = 0) -> None:
        slot = self.runs.get(run_id)
        if slot is not None and slot.logs is not None:
            slot.logs.relay(stream, data, dropped)

    def facts(self) -> cm.HostFacts:
        vm = psutil.virtual_memory()
        return cm.HostFacts(
            hostname=platform.node(), kernel=platform.release(), cpus=os.cpu_count() or 1,
            memory_bytes=vm.total, memory_available_bytes=vm.available, criu_version=self.mgr.criu.version,
            runc_version="", load_1m=os.getloadavg()[0], allow_host_network=self.mgr.config.allow_host_network,
            network=self.mgr.config.network, memory_offered_bytes=self.config.memory_bytes or vm.total,
            python_version=self.envs.python_version,
        )

    def holding(self) -> list[ap.RunRef]:
        """The runs here, and the runs whose exit report the coordinator has not acknowledged yet.

        A run leaves ``self.runs`` as soon as its exit is queued; listing it
        until the exit is acknowledged keeps a heartbeat from telling the
        coordinator the run vanished before the report of how it ended lands.
        """
        with self.lock:
            refs = {s.run_id: s.ref() for s in self.runs.values()}
        for m in self.outbox.unacked():
            if m.WhichOneof("msg") == "run_exited" and m.run_exited.run.run_id not in refs:
                refs[m.run_exited.run.run_id] = m.run_exited.run
        return list(refs.values())

    def _requests(self):  # type: ignore[no-untyped-def]
        return self.outbox.stream(
            register=self._register,
            heartbeat=lambda: ap.AgentMessage(heartbeat=ap.Heartbeat(slots_used=len(self.runs), facts=self.facts(),
                                                                     holding=self.holding(),
                                                                     number=self.fence.next_heartbeat())),
            period=lambda: self.heartbeat_seconds, stopped=self.stopped)

    def _register(self) -> ap.AgentMessage:
        self._register_sent = fence_clock()  # its Registered renews the lease from this moment
        return ap.AgentMessage(register=ap.Register(
            name=self.config.name, facts=self.facts(), slots=self.config.slots, labels=self.config.labels,
            holding=self.holding(), incarnation=self.outbox.incarnation))

    # -- lease fencing (agent/_fence.py) ------------------------------------------------

    def _watch_lease(self) -> None:
        next_redial = 0.0  # seconds past the fence
        while not self.stopped.wait(0.2):
            try:
                self.fence.check()
                # No renewal confirmed well past the fence: the stream may be dead without either end knowing
                # (a partition drops packets, no RST comes); a new stream's Registered renews at once. Each
                # redial waits twice as long as the one before, so a database outage (where no stream can
                # renew) does not pile up connection attempts on the coordinators.
                lapsed = self.fence.lapsed_for()
                if lapsed == 0:
                    next_redial = 2 * self.heartbeat_seconds
                elif lapsed > next_redial and self._call is not None:
                    log.warning("no lease renewal confirmed for %.1fs past the fence; opening a new stream", lapsed)
                    next_redial = min(2 * next_redial, next_redial + 60.0)
                    self._call.cancel()
            except Exception:
                log.exception("lease check failed")

    def _kill_stale(self, refs: list[ap.RunRef]) -> None:
        """SIGKILL every process of these runs' containers here (before a thaw: they never run again)."""
        for ref in refs:
            slot = self._slot(ref, "stale")
            if slot is None:
                continue
            with slot.lock:
                slot.stopping = slot.stopping or "stale_generation"
            if slot.container is not None and slot.container.running:
                self.mgr.runc.kill(slot.container.id, "KILL", every_process=True)
            elif slot.container is None:
                # A start or restore under way: its container may exist already (ids are RUN.xxxxxxxx).
                for st in self.mgr.runc.list():
                    if st.id.startswith(f"{ref.run_id}."):
                        self.mgr.runc.kill(st.id, "KILL", every_process=True)

    def _unpause(self) -> None:
        """Resume the containers left frozen on their own by a dump that began while the parent was frozen.

        CRIU puts a container back in the freezer state it found it in; one it
        found frozen (by fencing) stays frozen after the parent's thaw. A
        container whose dump is still under way is left to that dump's end.
        """
        with self.lock:
            slots = list(self.runs.values())
        for slot in slots:
            c = slot.container
            if c is None or not c.running or slot.dump_lock.locked():
                continue
            self._resume_if_paused(c.id)

    def _resume_if_paused(self, container_id: str) -> None:
        if self.fence.freezer.frozen():
            return  # fenced: the next confirmed renewal comes back here
        if self.mgr.runc.resume(container_id):
            log.warning("container %s was left frozen by a dump; resumed it", container_id)

    # -- the connection loop ------------------------------------------------------

    def serve_forever(self) -> None:
        backoff = 0.2
        while not self.stopped.is_set():
            try:
                self._connect_once()
                backoff = 0.2
            except grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else None
                if code == grpc.StatusCode.UNAUTHENTICATED:
                    log.error("the coordinator refused this agent's join token: %s", exc.details())
                else:
                    log.warning("coordinator stream ended (%s); reconnecting", code)
            except Exception:
                log.exception("agent connection loop failed; reconnecting")
            self.connected.clear()
            if self.stopped.wait(backoff):
                break
            # Never longer than a quarter lease: after a coordinator restart every agent gets one lease to be
            # back (docs/coordinator.md), and a backoff longer than that would lose it its runs.
            backoff = min(backoff * 2, 5.0, max(0.2, self.lease_seconds / 4))

    def _connect_once(self) -> None:
        if self.config.tls_ca:
            creds = grpc.ssl_channel_credentials(root_certificates=self.config.tls_ca)
            channel = grpc.secure_channel(self.config.coordinator, creds)
        else:
            channel = grpc.insecure_channel(self.config.coordinator)
        with channel:
            stub = ag.AgentChannelStub(channel)
            call = stub.Connect(self._requests(), metadata=[("authorization", f"Bearer {self.config.join_token}")])
            self._call = call
            for msg in call:
                self._dispatch(msg)

    def stop(self) -> None:
        """Stop talking to the coordinator (containers keep running, as when a host's agent restarts)."""
        self.stopped.set()
        self.outbox.close()
        if self._call is not None:
            self._call.cancel()

    def shutdown_containers(self, wait: float = 30) -> None:
        """Kill every container of this agent and wait until they are gone."""
        with self.lock:
            slots = list(self.runs.values())
        for slot in slots:
            self._kill(slot, "agent_shutdown")
        self.fence.freezer.thaw()  # frozen for want of a lease: each dies of its SIGKILL before running again
        deadline = time.monotonic() + wait
        for slot in slots:
            c = slot.container
            if c is not None:
                try:
                    c.wait(timeout=max(0.1, deadline - time.monotonic()))
                except Exception:  # noqa: BLE001 - best effort on the way out
                    c.proc.kill()
                self.mgr._cleanup(c.id, c.bundle, c.socket_dir)
        if not self.fence.freezer.has_processes():
            self.fence.stop_guard()
            self.fence.freezer.remove()

    # -- commands -------------------------------------------------------------------

    def _dispatch(self, msg: ap.CoordinatorMessage) -> None:
        kind = msg.WhichOneof("msg")
        if kind == "registered":
            r = msg.registered
            self.heartbeat_seconds = r.heartbeat_seconds or self.heartbeat_seconds
            self.lease_seconds = r.lease_seconds or self.lease_seconds
            self.fence.fence_seconds = r.fence_seconds or 0.8 * (r.lease_seconds or 15.0)
            self.fence.renewed(self._register_sent, lambda: self._kill_stale(list(r.stale)), self._unpause)
            self._take_keys(r)
            self.connected.set()
            log.info("registered with %s as %s", self.config.coordinator, self.config.name)
            return
        if kind == "ack":
            self.outbox.acked(msg.ack.seq)
            return
        if kind == "heartbeat_ack":
            ack = msg.heartbeat_ack
            self.fence.heartbeat_confirmed(ack.number, lambda: self._kill_stale(list(ack.stale)), self._unpause)
            return
        if kind == "child_triggered":
            slot = self.runs.get(msg.child_triggered.run.run_id)
            if slot is not None:
                slot.child_triggered(msg.child_triggered)
            return
        if msg.cmd_id and not self.outbox.take_command(msg.cmd_id):
            return  # sent again after a reconnect, and already taken
        handler = getattr(self, f"_on_{kind}", None)
        if handler is None:
            log.warning("ignoring unknown coordinator message %s", kind)
            return
        body = getattr(msg, kind)
        if kind in ("start", "restore"):
            # Held, and so listed in every heartbeat, from the moment the command is read here rather than when
            # a worker takes it: a heartbeat on this stream without it tells the coordinator it is still on its
            # way (docs/coordinator.md, "The agent channel contract"). A refusal is the worker's to report.
            with contextlib.suppress(RuntimeError):
                handler = functools.partial(handler, slot=self._new_slot(body.spec))
        self.pool.submit(self._guarded, handler, body, kind)

    def _take_keys(self, r: ap.Registered) -> None:
        """Use the snapshot keys the coordinator sent (kept in memory only); without any, keep the old ones."""
        try:
            if not r.HasField("snapshot_key"):
                raise ConfigError("it sent none (upgrade coordinators before agents)")
            self.mgr.keys = keyring_of((r.snapshot_key.id, r.snapshot_key.key),
                                       [(k.id, k.key) for k in r.old_snapshot_keys])
        except ConfigError as exc:
            log.error("no usable snapshot key from the coordinator: %s; %s", exc,
                      "checkpoints are refused" if self.mgr.keys is None else "keeping the keys it sent before")

    def _guarded(self, handler, body, kind: str) -> None:  # type: ignore[no-untyped-def]
        run = getattr(body, "run", None) or getattr(getattr(body, "spec", None), "run", None)
        token = bind(run_id=getattr(run, "run_id", None), agent=self.config.name, generation=getattr(run, "generation", None))
        try:
            handler(body)
        except Exception as exc:
            log.exception("%s failed", kind)
            self.send(ap.AgentMessage(command_failed=ap.CommandFailed(
                run=ap.RunRef(run_id=run.run_id, generation=run.generation) if run is not None else None,
                command=kind, error=str(exc)[:4000], request_id=getattr(body, "request_id", ""),
                # Not this host's fault: the coordinator places the run again after a pause, spending nothing.
                store_unavailable=isinstance(exc, StoreError) and kind in ("start", "restore"))))
        finally:
            del token

    def _slot(self, run: ap.RunRef, what: str) -> RunSlot | None:
        slot = self.runs.get(run.run_id)
        if slot is None or slot.generation != run.generation:
            log.info("%s for run %s gen %s: not held here (holding gen %s)", what, run.run_id, run.generation,
                     slot.generation if slot else None)
            return None
        return slot

    def _watch(self, slot: RunSlot) -> None:
        if slot.spec.settings.checkpoint_every > 0:
            threading.Thread(target=self._periodic, args=(slot,), daemon=True).start()
        threading.Thread(target=self._wait_exit, args=(slot,), daemon=True, name=f"wait-{slot.run_id}").start()

    def _wait_exit(self, slot: RunSlot) -> None:
        container = slot.container
        assert container is not None
        code = container.wait()
        with slot.lock:
            suspended = slot.suspending
        if suspended:
            return  # the suspend handler reports and cleans up
        if self.runs.get(slot.run_id) is slot:
            self.send(slot.exit_message(code, oom=code == 137 and self.mgr.oom_killed(container)))
        self._drop(slot)

    def _drop(self, slot: RunSlot) -> None:
        if slot.server is not None:
            slot.server.close()
        if slot.container is not None and not slot.container.running:
            self.mgr._cleanup(slot.container.id, slot.container.bundle, slot.container.socket_dir)
        with self.lock:
            current = self.runs.get(slot.run_id) is slot
            if current:
                del self.runs[slot.run_id]
            in_use = {s.spec.version for s in self.runs.values()}
            envs_in_use = {s.spec.environment_id for s in self.runs.values()}
        if current:  # a stale copy replaced by a newer generation here leaves the new one's logs alone
            _hygiene.drop_run_logs(self.mgr.state, slot.run_id)
        _hygiene.gc_bundles(self.mgr.state / "bundles", in_use, self.config.bundle_ttl)
        self.envs.collect(envs_in_use, self.config.env_ttl)

    def _kill(self, slot: RunSlot, reason: str) -> None:
        with slot.lock:
            slot.stopping = reason
        if slot.container is not None and slot.container.running:
            self.mgr.runc.kill(slot.container.id, "KILL")

    def _on_kill(self, body: ap.KillRun) -> None:
        slot = self._slot(body.run, "kill")
        if slot is not None:
            self._kill(slot, body.reason or "killed")

    def _on_wait_resolved(self, body: ap.WaitResolved) -> None:
        slot = self._slot(body.run, "wait_resolved")
        if slot is None:
            return
        # One lock section for the check and the act: a SuspendRun handled at the same time either sees the
        # wait resolved (and dumps nothing) or has already begun its dump (and we leave the wait to the
        # coordinator, which restores the run with this result). Never both a resume and a dump.
        with slot.lock:
            if slot.suspending:
                # The dump is under way: the coordinator restores with this result, or, if the dump fails,
                # _on_suspend applies it here (the coordinator sends a resolution once).
                slot.resolved_while_dumping = body
                return
            _faults.hit("agent.before_resolve")
            resumed = slot.resolve(body.wait_id, Outcome.of(body))
        if resumed:
            self.send(ap.AgentMessage(run_resumed=ap.RunResumed(run=slot.ref(), wait_id=body.wait_id)))

"""Fixtures and a fake agent for the coordinator tests (imported by each test module).

The fake agent is a real gRPC client of ``torpor.v1.AgentChannel``: it
registers, heartbeats with what it holds, records every command, and reports
whatever the test tells it to.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from typing import Any, Callable, Iterator

import grpc
import pytest

from helpers import assert_eventually, free_port
from torpor._proto.v1 import agent_pb2, agent_pb2_grpc, common_pb2
from torpor.client import Client
from torpor.coordinator import Coordinator, CoordinatorConfig

API_KEY = "tpk_test_client-secret"
JOIN_TOKEN = "tpj_test_join-secret"


def make_config(db_url: str, **overrides: Any) -> CoordinatorConfig:
    settings: dict[str, Any] = dict(
        db_url=db_url, listen=f"127.0.0.1:{free_port()}", api_keys=(API_KEY,), join_tokens=(JOIN_TOKEN,),
        lease_seconds=1.0, heartbeat_seconds=0.2, tick_seconds=0.05, schedule_poll_seconds=0.2, migrate=False,
        db_pool_size=12, grpc_workers=48, auth_cache_seconds=0.2,
    )
    settings.update(overrides)
    return CoordinatorConfig(**settings)


@pytest.fixture
def start_coordinator(postgres_url: str) -> Iterator[Callable[..., Coordinator]]:
    started: list[Coordinator] = []

    def start(*, store: Any = None, **overrides: Any) -> Coordinator:
        c = Coordinator(make_config(overrides.pop("db_url", postgres_url), **overrides), store=store).start()
        started.append(c)
        return c

    yield start
    for c in reversed(started):
        c.stop(grace=0)


@pytest.fixture
def coordinator(start_coordinator: Callable[..., Coordinator]) -> Coordinator:
    return start_coordinator()


@pytest.fixture
def client(coordinator: Coordinator) -> Iterator[Client]:
    with Client(f"127.0.0.1:{coordinator.port}", api_key=API_KEY) as c:
        yield c


@pytest.fixture
def agents(coordinator: Coordinator) -> Iterator[Callable[..., "FakeAgent"]]:
    made: list[FakeAgent] = []

    def make(name: str | None = None, *, slots: int = 4, target: Coordinator | None = None, **kw: Any) -> FakeAgent:
        a = FakeAgent(f"127.0.0.1:{(target or coordinator).port}", name or f"agent-{len(made)}", slots=slots, **kw)
        a.connect()
        made.append(a)
        return a

    yield make
    for a in made:
        a.close()


def task(task_id: str, **settings: Any) -> common_pb2.TaskSettings:
    retry = settings.pop("retry", None)
    t = common_pb2.TaskSettings(id=task_id, module="tests.tasks", function=task_id, **settings)
    if retry is not None:
        t.retry.CopyFrom(common_pb2.RetryPolicy(**retry))
    return t


_versions = itertools.count(1)


def deploy(client: Client, *tasks: common_pb2.TaskSettings) -> str:
    version = f"v{next(_versions)}-{time.monotonic_ns()}"
    client.deploy(version, tasks, project="tests", bundle_location=f"deployments/{version}/bundle.tar.zst")
    return version


def status(client: Client, run_id: str) -> str:
    return common_pb2.RunStatus.Name(client.get_run(run_id).status)


def wait_status(client: Client, run_id: str, *expected: str, timeout: float = 10.0) -> Any:
    def check() -> Any:
        run = client.get_run(run_id)
        name = common_pb2.RunStatus.Name(run.status)
        assert name in expected, f"run {run_id} is {name}, waiting for {expected}"
        return run
    return assert_eventually(check, timeout)


def running(client: Client, agent: "FakeAgent", task_id: str, *args: Any, **kwargs: Any) -> str:
    """Trigger ``task_id`` and wait until it is RUNNING on ``agent``; return the run id."""
    run_id = client.trigger(task_id, *args, **kwargs).run_id
    agent.wait_command("start", run_id)
    wait_status(client, run_id, "RUNNING")
    return run_id


def suspend_on(agent: "FakeAgent", run_id: str, wait_id: str, **kind: Any) -> None:
    """Ask for a wait and, once told to go ahead, dump and exit as suspended."""
    agent.send(wait_requested=agent_pb2.WaitRequested(run=agent.ref(run_id), wait_id=wait_id, **kind))
    agent.wait_command("suspend", run_id)
    agent.suspend(run_id, wait_id)


class FakeAgent:
    def __init__(self, address: str, name: str, *, slots: int = 4, token: str = JOIN_TOKEN, auto_start: bool = True,
                 heartbeat: bool = True, holding: list[tuple[str, int]] | None = None,
                 auto_exit: float | None = None, tracker: "Tracker | None" = None, incarnation: str = "",
                 ack_commands: bool = True, allow_host_network: bool = False, memory: int = 0,
                 python: str = "") -> None:
        self.address = address
        self.python = python  # reported in HostFacts.python_version; "": not reported
        self.allow_host_network = allow_host_network
        self.memory = memory  # offered to runs and available on its "host"; 0: not reported
        self.name = name
        self.slots = slots
        self.token = token
        self.auto_start = auto_start
        self.heartbeat = heartbeat
        self.held: dict[str, int] = dict(holding or [])
        self.initial_holding = list(holding or [])
        self.commands: list[agent_pb2.CoordinatorMessage] = []
        self._cond = threading.Condition()
        self._out: queue.Queue[agent_pb2.AgentMessage | None] = queue.Queue()
        self._stop = threading.Event()
        self._channel = grpc.insecure_channel(address)
        self.auto_exit = auto_exit
        self.incarnation = incarnation
        self.ack_commands = ack_commands
        self.tracker = tracker
        self.registered = threading.Event()
        self.registered_message: agent_pb2.Registered | None = None
        self.error: grpc.RpcError | None = None

    # --- wire -------------------------------------------------------------
    def _requests(self) -> Iterator[agent_pb2.AgentMessage]:
        yield agent_pb2.AgentMessage(register=agent_pb2.Register(
            name=self.name, slots=self.slots, facts=common_pb2.HostFacts(hostname=self.name, cpus=2,
                                                              allow_host_network=self.allow_host_network,
                                                              memory_offered_bytes=self.memory,
                                                              memory_available_bytes=self.memory,
                                                              python_version=self.python),
            labels={"zone": "test"}, incarnation=self.incarnation,
            holding=[agent_pb2.RunRef(run_id=r, generation=g) for r, g in self.initial_holding]))
        while True:
            msg = self._out.get()
            if msg is None:
                return
            yield msg

    def connect(self) -> "FakeAgent":
        stub = agent_pb2_grpc.AgentChannelStub(self._channel)
        self._call = stub.Connect(self._requests(), metadata=(("authorization", f"Bearer {self.token}"),))
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._beat, daemon=True).start()
        return self

    def _read(self) -> None:
        try:
            for msg in self._call:
                kind = msg.WhichOneof("msg")
                if msg.cmd_id and self.ack_commands:  # as the real agent: acknowledge outbox commands on arrival
                    self.send(command_ack=agent_pb2.CommandAck(cmd_ids=[msg.cmd_id]))
                if kind == "registered":
                    self.registered_message = msg.registered
                    self.registered.set()
                    continue
                if kind in ("start", "restore"):
                    spec = getattr(msg, kind).spec
                    with self._cond:
                        self.held[spec.run.run_id] = spec.run.generation
                    if self.tracker is not None:
                        self.tracker.started(spec)
                    if self.auto_start:
                        self.send(run_started=agent_pb2.RunStarted(run=spec.run, restored=kind == "restore",
                                                                    checkpoint_id=msg.restore.checkpoint_id))
                    if self.auto_exit is not None:
                        threading.Timer(self.auto_exit, self._finish, args=(spec.run.run_id,)).start()
                elif kind == "kill":
                    with self._cond:
                        if self.held.get(msg.kill.run.run_id) == msg.kill.run.generation:
                            del self.held[msg.kill.run.run_id]
                with self._cond:
                    self.commands.append(msg)
                    self._cond.notify_all()
        except grpc.RpcError as exc:
            self.error = exc
        finally:
            with self._cond:
                self._cond.notify_all()

    def _finish(self, run_id: str) -> None:
        if self.tracker is not None:
            self.tracker.ended(run_id)
        self.exit(run_id, output=run_id)

    def _beat(self) -> None:
        while not self._stop.wait(0.15):
            if self.heartbeat and self.registered.is_set():
                with self._cond:  # listed and queued in one breath: see exit()
                    refs = [agent_pb2.RunRef(run_id=r, generation=g) for r, g in self.held.items()]
                    self.send(heartbeat=agent_pb2.Heartbeat(slots_used=len(refs), holding=refs))

    def send(self, **kw: Any) -> None:
        self._out.put(agent_pb2.AgentMessage(**kw))

    def close(self) -> None:
        self._stop.set()
        self._out.put(None)
        try:
            self._call.cancel()
        except Exception:
            pass
        self._channel.close()

    # --- what the test asks --------------------------------------------------
    def ref(self, run_id: str) -> agent_pb2.RunRef:
        with self._cond:
            return agent_pb2.RunRef(run_id=run_id, generation=self.held[run_id])

    def wait_command(self, kind: str, run_id: str | None = None, timeout: float = 10.0, after: int = 0) -> agent_pb2.CoordinatorMessage:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for msg in self.commands[after:]:
                    if msg.WhichOneof("msg") == kind and (run_id is None or _run_of(msg) == run_id):
                        return msg
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{self.name}: no {kind} command for {run_id} within {timeout}s; got "
                                         f"{[m.WhichOneof('msg') for m in self.commands]}")
                self._cond.wait(left)

    def count(self, kind: str, run_id: str | None = None) -> int:
        with self._cond:
            return sum(1 for m in self.commands if m.WhichOneof("msg") == kind and (run_id is None or _run_of(m) == run_id))

    def exit(self, run_id: str, *, output: Any = None, error: str = "", traceback: str = "", reason: str = "",
             code: int = 0, has_result: bool = True) -> None:
        import json

        ref = self.ref(run_id)
        # Forgotten and reported under one lock, as the real agent lists a run until its exit is acknowledged:
        # a heartbeat queued between the two would tell the coordinator the run vanished (lost, restarted).
        with self._cond:
            self.held.pop(run_id, None)
            self.send(run_exited=agent_pb2.RunExited(run=ref, exit_code=code, has_result=has_result,
                                                      output_json=json.dumps(output) if not error else "",
                                                      error=error, traceback=traceback, reason=reason))

    def checkpoint(self, run_id: str, ckpt_id: str, kind: int = common_pb2.SUSPEND, request_id: str = "",
                   key_id: str = "", network: str = "") -> None:
        self.send(checkpoint_recorded=agent_pb2.CheckpointRecorded(
            run=self.ref(run_id), request_id=request_id,
            checkpoint=common_pb2.Checkpoint(id=ckpt_id, kind=kind, size_bytes=1234, raw_bytes=5678, duration_ms=42,
                                             agent=self.name, location=f"runs/{run_id}/checkpoints/{ckpt_id}/manifest.json",
                                             key_id=key_id, network=network)))

    def suspend(self, run_id: str, wait_id: str) -> None:
        """What a real agent does after SuspendRun: dump, record the checkpoint, exit as suspended."""
        self.checkpoint(run_id, f"ck-{wait_id}")
        self.exit(run_id, has_result=False, reason="suspended")


class Tracker:
    """Counts, across agents, how many runs of each queue are on an agent at once, and every start."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.queue_of: dict[str, str] = {}
        self.active: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.starts: dict[str, int] = {}

    def started(self, spec: agent_pb2.RunSpec) -> None:
        with self._lock:
            q = spec.settings.queue or spec.task
            self.queue_of[spec.run.run_id] = q
            self.active[q] = self.active.get(q, 0) + 1
            self.peak[q] = max(self.peak.get(q, 0), self.active[q])
            self.starts[spec.run.run_id] = self.starts.get(spec.run.run_id, 0) + 1

    def ended(self, run_id: str) -> None:
        with self._lock:
            q = self.queue_of[run_id]
            self.active[q] -= 1


def _run_of(msg: agent_pb2.CoordinatorMessage) -> str:
    kind = msg.WhichOneof("msg")
    inner = getattr(msg, kind)
    if kind in ("start", "restore"):
        return inner.spec.run.run_id
    return inner.run.run_id if hasattr(inner, "run") else ""

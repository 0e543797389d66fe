"""The runtime server's bounds over a real unix socket: frame limits, connection permits, the read timeout."""

from __future__ import annotations

import socket
import struct
import threading
from pathlib import Path

import pytest

from helpers import assert_eventually
from torpor._errors import LimitExceeded
from torpor._proto.v1 import runtime_pb2 as rt
from torpor.agent._bounds import AgentBounds
from torpor.agent._runtime_server import RuntimeServer
from torpor.sdk import _runtime
from torpor.sdk._wire import recv_frame


class Served:
    def __init__(self, directory: Path, bounds: AgentBounds, gate: threading.Semaphore | None = None) -> None:
        directory.mkdir()
        self.requests: list[str] = []
        self.server = RuntimeServer(directory, self._handle, name=directory.name, bounds=bounds, gate=gate)
        self.server.start()
        self.path = str(directory / "runtime.sock")

    def _handle(self, req: rt.RuntimeRequest) -> rt.RuntimeResponse:
        self.requests.append(req.WhichOneof("msg"))
        return rt.RuntimeResponse(ok=rt.Empty())

    def call(self, req: rt.RuntimeRequest) -> rt.RuntimeResponse:
        _runtime.set_socket_path(self.path)
        try:
            return _runtime.call(req, timeout=30)
        finally:
            _runtime.set_socket_path(None)

    def stall(self) -> socket.socket:
        """A connection that sends half a frame and then nothing."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.path)
        s.sendall(struct.pack(">I", 1000) + b"\x32")
        return s


@pytest.fixture
def served(tmp_path):  # type: ignore[no-untyped-def]
    made: list[Served] = []

    def make(name: str, bounds: AgentBounds, gate: threading.Semaphore | None = None) -> Served:
        made.append(Served(tmp_path / name, bounds, gate))
        return made[-1]

    yield make
    for s in made:
        s.server.close()


def test_a_frame_over_its_kind_limit_is_refused_unread_with_the_limit_named(served):
    run = served("r", AgentBounds(max_metadata_bytes=1000, max_trigger_bytes=4096))
    with pytest.raises(LimitExceeded) as big:
        run.call(rt.RuntimeRequest(metadata=rt.RuntimeMetadata(metadata_json="x" * (32 << 20))))
    assert (big.value.what, big.value.limit) == ("metadata", 1000) and big.value.actual > 32 << 20
    assert "--max-metadata-bytes" in big.value.setting and "1,000 bytes" in str(big.value)
    with pytest.raises(LimitExceeded) as over:  # just over: read, and measured exactly
        run.call(rt.RuntimeRequest(metadata=rt.RuntimeMetadata(metadata_json="y" * 1001)))
    assert (over.value.limit, over.value.actual) == (1000, 1001)
    items = [rt.RuntimeTriggerItem(task="t", payload_json="1" * 3000) for _ in range(2)]
    with pytest.raises(LimitExceeded) as trig:
        run.call(rt.RuntimeRequest(trigger=rt.RuntimeTrigger(items=items)))
    assert trig.value.what == "trigger" and trig.value.limit == 4096
    assert run.requests == []  # none of them reached the handler
    assert run.call(rt.RuntimeRequest(metadata=rt.RuntimeMetadata(metadata_json="{}"))).HasField("ok")
    # A raw flood of frames announcing 4 GiB costs the agent a header each.
    for _ in range(50):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(run.path)
            s.sendall(struct.pack(">I", 0xFFFFFFFF) + b"\x32" + b"z" * 1000)
            resp = rt.RuntimeResponse()
            resp.ParseFromString(recv_frame(s))
            assert resp.limit.what == "metadata"
    assert run.requests == ["metadata"]


def test_stalled_connections_hold_only_their_runs_permits_and_are_dropped_after_the_read_timeout(served):
    bounds = AgentBounds(connections_per_run=3, connections_total=6, read_timeout=1.0)
    gate = threading.BoundedSemaphore(bounds.connections_total)
    flood = served("flood", bounds, gate)
    calm = served("calm", bounds, gate)
    threads_before = threading.active_count()
    stalled = [flood.stall() for _ in range(10)]  # 3 served, the rest wait in the backlog
    assert_eventually(lambda: flood.server._active == 3)
    # Another run is answered meanwhile.
    for _ in range(5):
        assert calm.call(rt.RuntimeRequest(context=rt.GetRunContext())).HasField("ok")
    flood_threads = [t for t in threading.enumerate() if t.name == "runtime-conn-flood"]
    assert flood.server._active == 3 and len(flood_threads) == 3
    assert threading.active_count() <= threads_before + 2 * bounds.connections_per_run
    # Each stalled connection is dropped at its read timeout: every one of them sees the end.
    for s in stalled:
        s.settimeout(30)
        assert s.recv(1) == b""
        s.close()
    assert flood.requests == [] and calm.requests == ["context"] * 5
    assert_eventually(lambda: flood.server._active == 0)


def test_connections_past_the_agents_total_wait_for_a_permit(served):
    bounds = AgentBounds(connections_per_run=2, connections_total=2, read_timeout=60.0)
    gate = threading.BoundedSemaphore(bounds.connections_total)
    a = served("a", bounds, gate)
    b = served("b", bounds, gate)
    stalled = [a.stall() for _ in range(2)]
    assert_eventually(lambda: a.server._active == 2)  # every permit of the agent is taken
    answers: list[rt.RuntimeResponse] = []
    waiting = threading.Thread(target=lambda: answers.append(b.call(rt.RuntimeRequest(context=rt.GetRunContext()))))
    waiting.start()
    waiting.join(0.5)
    assert answers == [] and b.server._active == 0  # not accepted: no permit left
    for s in stalled:
        s.close()  # the stalled requests end: their permits come back
    waiting.join(30)
    assert len(answers) == 1 and answers[0].HasField("ok")

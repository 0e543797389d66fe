"""The coordinator's half of lease fencing, over real gRPC and Postgres.

Registered tells the agent how long it may let containers run past a
confirmed renewal (fence_seconds, shorter than the lease) and which held runs
are no longer its own; each heartbeat is confirmed by number after its
transaction committed, naming the stale runs the agent must kill before it
thaws anything.
"""

from __future__ import annotations

from coord_support import FakeAgent, agents, client, coordinator, deploy, running, start_coordinator, task, wait_status  # noqa: F401
from helpers import assert_eventually
from torpor._proto.v1 import agent_pb2


def _acks(agent: FakeAgent) -> list[agent_pb2.HeartbeatAck]:
    return [m.heartbeat_ack for m in agent.commands if m.WhichOneof("msg") == "heartbeat_ack"]


def test_heartbeats_are_confirmed_by_number_and_a_lapsed_agent_learns_its_runs_are_gone(client, agents, coordinator):
    deploy(client, task("fenced"))
    first = agents("fence-a", heartbeat=False)
    run_id = running(client, first, "fenced")
    first.send(heartbeat=agent_pb2.Heartbeat(holding=[first.ref(run_id)], number=41))
    assert_eventually(lambda: [a.number for a in _acks(first)] == [41], 5)
    assert list(_acks(first)[0].stale) == []

    # No heartbeat for longer than the lease (1 s here): the run is given to another agent.
    second = agents("fence-b")
    assert_eventually(lambda: second.count("start", run_id) == 1, 10, msg="the run was not moved")
    wait_status(client, run_id, "RUNNING")

    # The first agent comes back: its renewal is confirmed, and the run is named stale in the same answer.
    first.send(heartbeat=agent_pb2.Heartbeat(holding=[agent_pb2.RunRef(run_id=run_id, generation=1)], number=42))
    assert_eventually(lambda: [a.number for a in _acks(first)] == [41, 42], 5)
    assert [(r.run_id, r.generation) for r in _acks(first)[1].stale] == [(run_id, 1)]


def test_registered_carries_the_fence_period_and_the_stale_runs(client, agents, coordinator):
    deploy(client, task("refenced"))
    first = agents("refence-a", heartbeat=False)
    run_id = running(client, first, "refenced")
    second = agents("refence-b")
    assert_eventually(lambda: second.count("start", run_id) == 1, 10, msg="the run was not moved")
    first.close()

    back = agents("refence-a", holding=[(run_id, 1)])
    assert back.registered.wait(5)
    reg = back.registered_message
    assert reg.lease_seconds == 1.0 and reg.fence_seconds == 0.8
    assert [(r.run_id, r.generation) for r in reg.stale] == [(run_id, 1)]

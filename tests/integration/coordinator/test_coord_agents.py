"""Agent leases, host failure, fencing by generation, and the agent list."""

from __future__ import annotations

import time

from helpers import assert_eventually
from coord_support import (  # noqa: F401  (fixtures)
    JOIN_TOKEN, FakeAgent, agents, client, coordinator, deploy, running, suspend_on, start_coordinator, status, task, wait_status,
)
from torpor._proto.v1 import agent_pb2, common_pb2


def test_lease_expiry_restores_from_the_latest_checkpoint_elsewhere(client, agents):
    deploy(client, task("long", retry=dict(max_attempts=1)))
    a1 = agents("a1", slots=1)
    run_id = running(client, a1, "long")
    a1.checkpoint(run_id, "ck-p1", kind=common_pb2.PERIODIC)
    a1.checkpoint(run_id, "ck-p2", kind=common_pb2.PERIODIC)
    assert_eventually(lambda: len(client.get_run(run_id).checkpoints) == 2)
    a2 = agents("a2", slots=1)
    a1.heartbeat = False  # the host hangs: no heartbeats, the lease runs out
    restore = a2.wait_command("restore", run_id, timeout=5)
    assert restore.restore.checkpoint_id == "ck-p2"
    assert not restore.restore.HasField("wake")
    assert restore.restore.spec.attempt == 1 and restore.restore.spec.run.generation == 2
    run = wait_status(client, run_id, "RUNNING")
    assert run.agent == "a2" and run.attempt == 1
    assert any(e.type == "host_lost" and "lost its lease" in e.detail for e in run.events)
    assert not [a for a in client.list_agents() if a.name == "a1"][0].alive
    # the old host comes back still holding generation 1: it is told to kill it,
    # and what it reports for generation 1 changes nothing
    a1.send(run_exited=agent_pb2.RunExited(run=agent_pb2.RunRef(run_id=run_id, generation=1), has_result=True,
                                           output_json='"stale"'))
    a1.heartbeat = True
    kill = a1.wait_command("kill", run_id, timeout=5)
    assert kill.kill.reason == "stale_generation" and kill.kill.run.generation == 1
    assert status(client, run_id) == "RUNNING"
    a2.exit(run_id, output="fresh")
    assert wait_status(client, run_id, "COMPLETED").output_json == '"fresh"'


def test_lease_expiry_without_checkpoint_restarts_the_attempt(client, agents):
    deploy(client, task("nock", retry=dict(max_attempts=1)))
    a1 = agents("a1", slots=1)
    run_id = running(client, a1, "nock")
    a1.close()  # the machine is gone
    a2 = agents("a2", slots=1)
    start = a2.wait_command("start", run_id, timeout=5)
    assert start.start.spec.attempt == 1 and start.start.spec.run.generation == 2
    run = wait_status(client, run_id, "RUNNING")
    assert "no checkpoint, restarting attempt 1" in [e.detail for e in run.events if e.type == "host_lost"][0]


def test_suspending_host_lost_after_a_complete_dump_is_just_suspended(client, agents):
    deploy(client, task("sl"))
    a1 = agents("a1")
    run_id = running(client, a1, "sl")
    import time
    a1.send(wait_requested=agent_pb2.WaitRequested(run=a1.ref(run_id), wait_id="w1", until_unix=time.time() + 3600))
    a1.wait_command("suspend", run_id)
    a1.checkpoint(run_id, "ck-w1")
    assert_eventually(lambda: len(client.get_run(run_id).checkpoints) == 1)
    a1.close()
    run = wait_status(client, run_id, "SUSPENDED", timeout=5)
    assert run.agent == ""


def test_register_with_stale_holdings_is_fenced(client, agents):
    deploy(client, task("f"))
    a1 = agents("a1")
    run_id = running(client, a1, "f")
    # a copy of the agent that remembers an older generation, and a run it never had
    ghost = agents("ghost", holding=[(run_id, 0), ("run_unknown", 3)])
    kill = ghost.wait_command("kill", run_id)
    assert kill.kill.reason == "stale_generation"
    ghost.wait_command("kill", "run_unknown")
    # its reports about the run are ignored
    ghost.send(run_started=agent_pb2.RunStarted(run=agent_pb2.RunRef(run_id=run_id, generation=1)))
    assert_eventually(lambda: ghost.count("kill", run_id) == 2)
    assert client.get_run(run_id).agent == "a1"


def test_a_start_lost_with_its_stream_is_placed_again_without_spending(client, agents):
    deploy(client, task("lost"))
    a1 = agents("a1", slots=1, auto_start=False)
    run_id = client.trigger("lost").run_id
    a1.wait_command("start", run_id)
    with a1._cond:
        a1.held.pop(run_id)  # the start command "never arrived" ...
    a1.close()  # ... and its stream ended: the agent's next stream does not list the run
    again = agents("a1", slots=1, auto_start=False)
    second = again.wait_command("start", run_id, timeout=5)
    assert second.start.spec.run.generation == 2
    run = client.get_run(run_id)
    assert any("never received the run" in e.detail for e in run.events)
    assert run.attempt == 1  # no host failure spent: nothing ran


def test_a_start_still_on_its_way_is_not_given_away(client, agents):
    """Heartbeats on the stream the StartRun went on, sent before the agent read it, do not list the run:
    that is no proof it was lost (a slow reader, a busy worker pool), and placing it again would let the late
    command start a second copy. Forced here by an agent that keeps heartbeating without listing it."""
    deploy(client, task("slow-to-read"))
    a1 = agents("a1", slots=1, auto_start=False)
    run_id = client.trigger("slow-to-read").run_id
    a1.wait_command("start", run_id)
    with a1._cond:
        a1.held.pop(run_id)
    time.sleep(3.0)  # three leases of heartbeats without the run (checked below, not timed)
    assert a1.count("start", run_id) == 1
    run = client.get_run(run_id)
    assert run.generation == 1 and common_pb2.RunStatus.Name(run.status) == "STARTING", run


def test_start_refused_by_agent_requeues(client, agents):
    deploy(client, task("refused"))
    a1 = agents("a1", slots=1, auto_start=False)
    run_id = client.trigger("refused").run_id
    a1.wait_command("start", run_id)
    a1.send(command_failed=agent_pb2.CommandFailed(run=a1.ref(run_id), command="start", error="bundle missing"))
    second = a1.wait_command("start", run_id, after=1)
    assert second.start.spec.run.generation == 2


def test_host_failures_are_bounded(start_coordinator):
    from coord_support import API_KEY
    from torpor.client import Client

    coord = start_coordinator(max_host_failures=2)
    with Client(f"127.0.0.1:{coord.port}", api_key=API_KEY) as c:
        deploy(c, task("doomed"))
        agent = FakeAgent(f"127.0.0.1:{coord.port}", "d1", auto_start=False).connect()
        try:
            run_id = c.trigger("doomed").run_id
            for n in range(3):
                agent.wait_command("start", run_id, after=n)
                agent.send(command_failed=agent_pb2.CommandFailed(run=agent.ref(run_id), command="start", error="no"))
            run = wait_status(c, run_id, "CRASHED")
            assert "gave up after 2 host failures" in run.error
        finally:
            agent.close()


def test_agents_list_and_reconnect(client, agents):
    a1 = agents("a1", slots=3)
    assert_eventually(lambda: [a.name for a in client.list_agents()] == ["a1"])
    info = client.list_agents()[0]
    assert info.alive and info.slots == 3 and info.labels["zone"] == "test" and info.facts.hostname == "a1"
    # the same agent connecting again takes over; the old stream is closed
    b = agents("a1", slots=5)
    assert_eventually(lambda: client.list_agents()[0].slots == 5)
    assert_eventually(lambda: a1.error is not None or not a1._call.is_active(), 5)
    deploy(client, task("x"))
    run_id = client.trigger("x").run_id
    b.wait_command("start", run_id)


def test_first_message_must_be_register(coordinator):
    import grpc
    from torpor._proto.v1 import agent_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{coordinator.port}") as ch:
        call = agent_pb2_grpc.AgentChannelStub(ch).Connect(
            iter([agent_pb2.AgentMessage(heartbeat=agent_pb2.Heartbeat())]),
            metadata=(("authorization", f"Bearer {JOIN_TOKEN}"),))
        try:
            list(call)
            raise AssertionError("expected an error")
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT and "Register" in exc.details()

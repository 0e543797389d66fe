"""WakeRun and Run.waiting through real gRPC and Postgres: what a run waits on, and ending a time wait early."""

from __future__ import annotations

import time

import pytest

from coord_support import (  # noqa: F401  (fixtures)
    agents, client, coordinator, deploy, running, start_coordinator, suspend_on, task, wait_status,
)
from torpor._errors import ErrorCode, RPCError
from torpor._proto.v1 import agent_pb2, common_pb2


def _refused(call, *words: str) -> RPCError:  # type: ignore[no-untyped-def]
    with pytest.raises(RPCError) as err:
        call()
    assert err.value.code == ErrorCode.FAILED_PRECONDITION, err.value
    for w in words:
        assert w in err.value.message, err.value.message
    return err.value


def test_wake_ends_a_suspended_time_wait_and_the_run_is_restored(client, agents):
    deploy(client, task("sleepy"))
    agent = agents()
    run_id = running(client, agent, "sleepy")
    assert not client.get_run(run_id).HasField("waiting")
    due = time.time() + 7200
    suspend_on(agent, run_id, "w1", until_unix=due)
    run = wait_status(client, run_id, "SUSPENDED")
    assert run.waiting.kind == "time" and run.waiting.wait_id == "w1"
    assert abs(run.waiting.due_at.ToSeconds() - due) < 1.5 and run.waiting.HasField("since")

    woken = client.wake_run(run_id)
    assert woken.status == common_pb2.RESTORING and not woken.HasField("waiting")
    restore = agent.wait_command("restore", run_id)
    assert restore.restore.wake.wait_id == "w1" and not restore.restore.wake.timed_out
    assert any("ended early by torpor runs wake" in e.detail for e in client.get_run(run_id).events)
    # Woken once: the wait is over, a second wake has nothing to end.
    _refused(lambda: client.wake_run(run_id), "not waiting")


def test_wake_while_the_dump_is_still_going_wakes_it_on_its_agent(client, agents):
    deploy(client, task("dumping"))
    agent = agents()
    run_id = running(client, agent, "dumping")
    agent.send(wait_requested=agent_pb2.WaitRequested(run=agent.ref(run_id), wait_id="w1", until_unix=time.time() + 600))
    agent.wait_command("suspend", run_id)
    assert client.get_run(run_id).waiting.wait_id == "w1"  # SUSPENDING: recorded, the dump not finished
    client.wake_run(run_id)
    resolved = agent.wait_command("wait_resolved", run_id)
    assert resolved.wait_resolved.wait_id == "w1"


def test_wake_refuses_token_and_children_waits_and_runs_that_do_not_wait(client, agents):
    deploy(client, task("asker"), task("kid"))
    agent = agents()
    run_id = running(client, agent, "asker")
    _refused(lambda: client.wake_run(run_id), "RUNNING", "not waiting")
    suspend_on(agent, run_id, "w1", token=agent_pb2.TokenWait(token_id="tok-wake", timeout_unix=0))
    run = wait_status(client, run_id, "SUSPENDED")
    assert run.waiting.kind == "token" and run.waiting.token_id == "tok-wake" and not run.waiting.HasField("due_at")
    _refused(lambda: client.wake_run(run_id), "token tok-wake", "torpor tokens complete tok-wake")
    assert client.get_run(run_id).status == common_pb2.SUSPENDED  # refused: nothing changed

    parent = running(client, agent, "asker")
    kid = client.trigger("kid", None, parent_run_id=parent).run_id
    suspend_on(agent, parent, "w2", children=agent_pb2.ChildrenWait(run_ids=[kid]))
    assert list(wait_status(client, parent, "SUSPENDED").waiting.child_run_ids) == [kid]
    _refused(lambda: client.wake_run(parent), "1 child run(s)")

    with pytest.raises(RPCError) as err:
        client.wake_run("run_missing")
    assert err.value.code == ErrorCode.NOT_FOUND


def test_agents_list_counts_slots_as_the_scheduler_does(client, agents):
    """A suspended run frees its slot at once, not at the agent's next heartbeat."""
    deploy(client, task("one"))
    agent = agents(slots=2)
    run_id = running(client, agent, "one")
    assert [a.slots_used for a in client.list_agents()] == [1]
    time.sleep(0.5)  # heartbeats (every 0.15 s) have reported the slot in use ...
    agent.heartbeat = False  # ... and none comes after the suspend to correct that figure
    suspend_on(agent, run_id, "w1", until_unix=time.time() + 3600)
    wait_status(client, run_id, "SUSPENDED")
    assert [a.slots_used for a in client.list_agents()] == [0]

"""Run lifecycle through real gRPC: start, finish, fail and retry, time out, wait, cancel."""

from __future__ import annotations

import time

import pytest

from helpers import assert_eventually
from coord_support import (  # noqa: F401  (fixtures)
    agents, client, coordinator, deploy, running, suspend_on, start_coordinator, status, task, wait_status,
)
from torpor._errors import ErrorCode, RPCError
from torpor._proto.v1 import agent_pb2, common_pb2


def test_queued_starting_running_completed(client, agents):
    deploy(client, task("hello"))
    run_id = client.trigger("hello", {"n": 1}).run_id
    assert status(client, run_id) == "QUEUED"
    agent = agents("a1")
    start = agent.wait_command("start", run_id)
    assert start.start.spec.payload_json == '{"n": 1}'
    assert start.start.spec.run.generation == 1
    assert start.start.spec.attempt == 1
    wait_status(client, run_id, "RUNNING")
    agent.exit(run_id, output={"ok": True})
    run = wait_status(client, run_id, "COMPLETED")
    assert run.output_json == '{"ok": true}'
    assert run.agent == "a1"
    assert [e.type for e in run.events] == ["queued", "starting", "started", "completed"]
    assert run.HasField("finished_at") and run.HasField("started_at")


def _failing_task(name: str, **retry):
    return task(name, retry=dict(max_attempts=3, factor=2, min_timeout=0.3, max_timeout=10, randomize=False, **retry))


def test_exception_retries_with_backoff_then_failed(client, agents):
    deploy(client, _failing_task("flaky"))
    agent = agents("a1")
    run_id = client.trigger("flaky", None).run_id
    starts = []
    for attempt, expected_delay in ((1, None), (2, 0.3), (3, 0.6)):
        after = len(agent.commands)
        t_exit = time.monotonic()
        start = agent.wait_command("start", run_id, after=after if attempt > 1 else 0)
        starts.append(time.monotonic())
        assert start.start.spec.attempt == attempt
        if expected_delay is not None:
            waited = starts[-1] - t_exit
            # backoff = min(max, min * factor^(attempt-1)); lower bound is strict, upper bound allows for the tick
            assert expected_delay <= waited < expected_delay + 1.0, (attempt, waited)
        wait_status(client, run_id, "RUNNING")
        agent.exit(run_id, error="ValueError: boom", traceback="Traceback...\nValueError: boom")
        if attempt < 3:
            run = wait_status(client, run_id, "RETRY_WAIT", "QUEUED", "STARTING", "RUNNING")
    run = wait_status(client, run_id, "FAILED")
    assert run.error == "ValueError: boom" and "Traceback" in run.traceback
    assert run.attempt == 3
    assert [a.status for a in run.attempts] == [common_pb2.FAILED] * 3
    assert [e.type for e in run.events].count("attempt_failed") == 3
    assert "next attempt in 0.3s" in [e.detail for e in run.events if e.type == "attempt_failed"][0]


def test_crash_without_result_spends_attempts_and_ends_crashed(client, agents):
    deploy(client, task("crashy", retry=dict(max_attempts=1)))
    agent = agents()
    run_id = running(client, agent, "crashy")
    agent.exit(run_id, has_result=False, code=139, reason="crashed")
    run = wait_status(client, run_id, "CRASHED")
    assert "exited with code 139" in run.error


def test_an_unexplained_sigkill_is_a_host_failure_and_spends_no_attempt(client, agents):
    # "killed": exit 137 that neither the agent nor the OOM killer caused (an OOM kill is OUT_OF_MEMORY:
    # test_coord_placement.py).
    deploy(client, task("killed", retry=dict(max_attempts=1)))
    agent = agents()
    run_id = running(client, agent, "killed")
    agent.exit(run_id, has_result=False, code=137, reason="killed")
    second = agent.wait_command("start", run_id, after=1)
    assert second.start.spec.attempt == 1 and second.start.spec.run.generation == 2
    run = wait_status(client, run_id, "RUNNING")
    assert "host_lost" in [e.type for e in run.events]


def test_max_duration_times_out_and_retries_per_policy(client, agents):
    deploy(client, task("slow", max_duration=0.4, retry=dict(max_attempts=2, min_timeout=0.1, randomize=False)))
    agent = agents()
    run_id = client.trigger("slow").run_id
    agent.wait_command("start", run_id)
    kill = agent.wait_command("kill", run_id, timeout=5)
    assert kill.kill.reason == "timed_out"
    second = agent.wait_command("start", run_id, after=1)
    assert second.start.spec.attempt == 2
    kill2 = agent.wait_command("kill", run_id, after=len(agent.commands) - 1, timeout=5)
    assert kill2.kill.run.generation == 2
    run = wait_status(client, run_id, "TIMED_OUT")
    assert "max_duration" in run.error and run.attempt == 2
    assert [a.status for a in run.attempts] == [common_pb2.TIMED_OUT] * 2


def _wait_request(agent, run_id, wait_id, **kind):
    agent.send(wait_requested=agent_pb2.WaitRequested(run=agent.ref(run_id), wait_id=wait_id, **kind))


def test_time_wait_suspends_and_restores_elsewhere_with_the_wake(client, agents):
    deploy(client, task("sleeper"))
    a1 = agents("a1", slots=1)
    run_id = running(client, a1, "sleeper")
    _wait_request(a1, run_id, "w1", until_unix=time.time() + 1.0)
    a1.wait_command("suspend", run_id)
    wait_status(client, run_id, "SUSPENDING")
    a1.suspend(run_id, "w1")
    run = wait_status(client, run_id, "SUSPENDED", "RESTORING", "RUNNING")
    # the slot is free while it sleeps: another run starts on a1
    other = client.trigger("sleeper").run_id
    a1.wait_command("start", other)
    a2 = agents("a2", slots=1)
    restore = a2.wait_command("restore", run_id, timeout=5)
    assert restore.restore.checkpoint_id == "ck-w1"
    assert restore.restore.checkpoint_location.endswith("ck-w1/manifest.json")
    assert restore.restore.wake.wait_id == "w1" and not restore.restore.wake.timed_out
    assert restore.restore.spec.run.generation == 2 and restore.restore.spec.attempt == 1
    assert restore.restore.wake.run.generation == 2
    run = wait_status(client, run_id, "RUNNING")
    assert run.agent == "a2"
    types = [e.type for e in run.events]
    assert types[3:6] == ["waiting", "checkpoint", "suspended"]
    assert types.index("restore_queued") < types.index("restoring") < types.index("restored")
    a2.exit(run_id, output=1)
    wait_status(client, run_id, "COMPLETED")


def test_wait_over_before_the_dump_wakes_in_place(client, agents):
    deploy(client, task("tok"))
    agent = agents()
    run_id = running(client, agent, "tok")
    agent.send(token_registered=agent_pb2.TokenRegistered(run=agent.ref(run_id), token_id="tok-1"))
    _wait_request(agent, run_id, "w1", token=agent_pb2.TokenWait(token_id="tok-1"))
    agent.wait_command("suspend", run_id)
    resp = client.complete_token("tok-1", {"approved": True})
    assert resp.completed and resp.run_id == run_id
    woken = agent.wait_command("wait_resolved", run_id)
    assert woken.wait_resolved.result_json == '{"approved": true}'
    assert not client.complete_token("tok-1", {"approved": False}).completed
    agent.send(run_resumed=agent_pb2.RunResumed(run=agent.ref(run_id), wait_id="w1"))
    run = wait_status(client, run_id, "RUNNING")
    assert "resumed" in [e.type for e in run.events]


def test_wait_over_during_the_dump_restores_at_once(client, agents):
    deploy(client, task("tok2"))
    agent = agents()
    run_id = running(client, agent, "tok2")
    _wait_request(agent, run_id, "w1", token=agent_pb2.TokenWait(token_id="tok-2"))
    agent.wait_command("suspend", run_id)
    client.complete_token("tok-2", "yes")
    agent.wait_command("wait_resolved", run_id)
    agent.suspend(run_id, "w1")  # the dump had already started
    restore = agent.wait_command("restore", run_id)
    assert restore.restore.wake.result_json == '"yes"'
    wait_status(client, run_id, "RUNNING")


def test_wait_already_over_is_answered_without_suspending(client, agents):
    deploy(client, task("past"))
    agent = agents()
    run_id = running(client, agent, "past")
    _wait_request(agent, run_id, "w1", until_unix=time.time() - 1)
    agent.wait_command("wait_resolved", run_id)
    assert agent.count("suspend", run_id) == 0
    assert status(client, run_id) == "RUNNING"


def test_token_timeout_wakes_with_timed_out(client, agents):
    deploy(client, task("tokt"))
    agent = agents()
    run_id = running(client, agent, "tokt")
    suspend_on(agent, run_id, "w1", token=agent_pb2.TokenWait(token_id="tok-t", timeout_unix=time.time() + 0.3))
    restore = agent.wait_command("restore", run_id)
    assert restore.restore.wake.timed_out


def test_unknown_token_is_not_found(client):
    with pytest.raises(RPCError) as err:
        client.complete_token("nope", 1)
    assert err.value.code == ErrorCode.NOT_FOUND


def test_children_wait_resumes_parent_with_their_outcomes(client, agents):
    deploy(client, task("parent"), task("child"))
    agent = agents(slots=4)
    parent = running(client, agent, "parent")
    agent.send(child_trigger=agent_pb2.ChildTrigger(run=agent.ref(parent), request_id="r1", items=[
        agent_pb2.TriggerItem(task="child", payload_json="1"), agent_pb2.TriggerItem(task="child", payload_json="2")]))
    reply = agent.wait_command("child_triggered", parent)
    assert reply.child_triggered.request_id == "r1" and not reply.child_triggered.error
    kids = list(reply.child_triggered.run_ids)
    assert len(kids) == 2 and client.get_run(kids[0]).parent_run_id == parent
    suspend_on(agent, parent, "w1", children=agent_pb2.ChildrenWait(run_ids=kids))
    for i, kid in enumerate(kids):
        agent.wait_command("start", kid)
        wait_status(client, kid, "RUNNING")
        agent.exit(kid, output=i * 10)
    restore = agent.wait_command("restore", parent)
    import json
    result = json.loads(restore.restore.wake.result_json)
    assert [(r["run_id"], r["status"], r["output"]) for r in result] == [(kids[0], "COMPLETED", 0), (kids[1], "COMPLETED", 10)]


def test_child_trigger_with_bad_item_is_refused(client, agents):
    deploy(client, task("p2"))
    agent = agents()
    parent = running(client, agent, "p2")
    agent.send(child_trigger=agent_pb2.ChildTrigger(run=agent.ref(parent), request_id="r1", items=[
        agent_pb2.TriggerItem(task="no-such-task", payload_json="1")]))
    reply = agent.wait_command("child_triggered", parent)
    assert "unknown task 'no-such-task'" in reply.child_triggered.error and not reply.child_triggered.run_ids


def test_cancel_in_each_state(client, agents):
    deploy(client, task("c"))
    queued = client.trigger("c").run_id
    assert common_pb2.RunStatus.Name(client.cancel_run(queued).status) == "CANCELED"
    agent = agents()
    on_agent = running(client, agent, "c")
    client.cancel_run(on_agent)
    kill = agent.wait_command("kill", on_agent)
    assert kill.kill.reason == "canceled"
    # a suspended run: its snapshot is released
    suspended = running(client, agent, "c")
    suspend_on(agent, suspended, "w1", until_unix=time.time() + 3600)
    wait_status(client, suspended, "SUSPENDED")
    run = client.cancel_run(suspended)
    assert common_pb2.RunStatus.Name(run.status) == "CANCELED"
    # late reports from the killed container change nothing
    with pytest.raises(RPCError) as err:
        client.cancel_run(suspended)
    assert err.value.code == ErrorCode.FAILED_PRECONDITION and "CANCELED" in err.value.message
    with pytest.raises(RPCError) as err:
        client.cancel_run("run_missing")
    assert err.value.code == ErrorCode.NOT_FOUND


def test_cancel_cascades_to_children(client, agents, coordinator):
    deploy(client, task("cp"), task("cc"))
    agent = agents()
    parent = running(client, agent, "cp")
    kids = [client.trigger("cc", i, parent_run_id=parent).run_id for i in range(2)]
    grandkid = client.trigger("cc", 9, parent_run_id=kids[0]).run_id
    client.cancel_run(parent)
    for r in (*kids, grandkid):
        run = wait_status(client, r, "CANCELED")
        assert "was canceled" in run.error


def test_released_snapshot_is_deleted_from_the_store(start_coordinator, tmp_path):
    from coord_support import API_KEY
    from torpor.client import Client

    class Store:
        deleted: list[str] = []

        def delete_prefix(self, prefix):
            self.deleted.append(prefix)
            return 1

    store = Store()
    coord = start_coordinator(store=store, janitor_seconds=0.1)
    with Client(f"127.0.0.1:{coord.port}", api_key=API_KEY) as c:
        deploy(c, task("s"))
        from coord_support import FakeAgent
        agent = FakeAgent(f"127.0.0.1:{coord.port}", "sa").connect()
        try:
            run_id = c.trigger("s").run_id
            agent.wait_command("start", run_id)
            wait_status(c, run_id, "RUNNING")
            suspend_on(agent, run_id, "w1", until_unix=time.time() + 3600)
            wait_status(c, run_id, "SUSPENDED")
            c.cancel_run(run_id)
            assert_eventually(lambda: store.deleted == [f"runs/{run_id}/checkpoints/ck-w1/"], 5)
        finally:
            agent.close()


def test_on_demand_checkpoint_and_logs_and_metadata(client, agents):
    deploy(client, task("ck"))
    agent = agents()
    run_id = client.trigger("ck").run_id
    with pytest.raises(RPCError) as err:
        client.checkpoint_run(run_id)
    assert err.value.code == ErrorCode.FAILED_PRECONDITION
    agent.wait_command("start", run_id)
    wait_status(client, run_id, "RUNNING")
    import threading
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("ck", client.checkpoint_run(run_id, wait=True, timeout=10)))
    t.start()
    cmd = agent.wait_command("checkpoint", run_id)
    assert cmd.checkpoint.kind == common_pb2.ON_DEMAND
    agent.checkpoint(run_id, "ck-od", kind=common_pb2.ON_DEMAND, request_id=cmd.checkpoint.request_id)
    t.join(10)
    assert result["ck"].id == "ck-od" and result["ck"].size_bytes == 1234
    ref = agent.ref(run_id)
    agent.send(log=agent_pb2.LogData(run=ref, stream="stdout", data=b"hello\n", attempt=1))
    agent.send(metadata=agent_pb2.MetadataUpdate(run=ref, metadata_json='{"progress": 0.5}'))
    assert_eventually(lambda: b"".join(c.data for c in client.stream_logs(run_id)) == b"hello\n")
    assert_eventually(lambda: client.get_run(run_id).metadata_json == '{"progress": 0.5}')
    chunks = []
    follower = threading.Thread(target=lambda: chunks.extend(client.stream_logs(run_id, follow=True, timeout=20)))
    follower.start()
    agent.send(log=agent_pb2.LogData(run=ref, stream="stderr", data=b"bye\n", attempt=1))
    assert_eventually(lambda: len(chunks) == 2)
    agent.exit(run_id, output=None)
    follower.join(10)
    assert not follower.is_alive() and [c.stream for c in chunks] == ["stdout", "stderr"]
    run = client.get_run(run_id)
    assert [c.id for c in run.checkpoints] == ["ck-od"]


def test_watch_run_streams_until_finished(client, agents):
    import threading

    deploy(client, task("w"))
    run_id = client.trigger("w").run_id
    seen: list[str] = []

    def watch() -> None:
        for r in client.watch_run(run_id, timeout=20):
            seen.append(common_pb2.RunStatus.Name(r.status))

    t = threading.Thread(target=watch)
    t.start()
    assert_eventually(lambda: seen == ["QUEUED"])
    agent = agents()
    agent.wait_command("start", run_id)
    wait_status(client, run_id, "RUNNING")
    agent.exit(run_id, output=3)
    t.join(10)
    assert not t.is_alive() and seen[0] == "QUEUED" and seen[-1] == "COMPLETED" and len(seen) >= 3
    assert client.wait_for_run(run_id).output_json == "3"


def test_waits_are_not_execution_time(client, agents):
    deploy(client, task("md", max_duration=1.0, retry=dict(max_attempts=1)))
    agent = agents()
    run_id = running(client, agent, "md")
    t_wait = time.monotonic()
    suspend_on(agent, run_id, "w1", until_unix=time.time() + 1.5)
    agent.wait_command("restore", run_id, timeout=5)
    # 1.5 s of wall time has passed, more than max_duration: it is still running
    assert time.monotonic() - t_wait >= 1.0
    wait_status(client, run_id, "RUNNING")
    run = wait_status(client, run_id, "TIMED_OUT", timeout=5)
    assert "max_duration" in run.error


def test_a_failure_marked_final_is_not_retried(client, agents):
    # The runtime marks a payload that does not fit the task's parameter type: every attempt would fail alike.
    deploy(client, task("typed", retry=dict(max_attempts=3, min_timeout=0.1, randomize=False)))
    agent = agents()
    run_id = running(client, agent, "typed")
    agent.send(run_exited=agent_pb2.RunExited(run=agent.ref(run_id), has_result=True, final=True,
                                              error="the payload does not fit Order: payload: Order has no field 'x'"))
    run = wait_status(client, run_id, "FAILED")
    assert run.attempt == 1 and "does not fit Order" in run.error
    assert agent.count("start", run_id) == 1

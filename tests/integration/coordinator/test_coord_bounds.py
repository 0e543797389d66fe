"""The coordinator's side of the bounds: per-attempt log accounting and budget, and the children of one run."""

from __future__ import annotations

from helpers import assert_eventually
from coord_support import (  # noqa: F401  (fixtures)
    API_KEY, agents, coordinator, deploy, running, start_coordinator, task,
)
from torpor._proto.v1 import agent_pb2, common_pb2
from torpor.client import Client
from torpor.coordinator import Limits


def _attempt(c: Client, run_id: str):  # type: ignore[no-untyped-def]
    return c.get_run(run_id).attempts[0]


def test_logs_are_counted_per_attempt_and_the_budget_travels_with_the_run(start_coordinator, agents):
    coord = start_coordinator(log_budget_bytes=1000)
    with Client(f"127.0.0.1:{coord.port}", api_key=API_KEY) as c:
        deploy(c, task("loud"))
        agent = agents(target=coord)
        run_id = running(c, agent, "loud")
        start = agent.wait_command("start", run_id).start.spec
        assert (start.log_budget_bytes, start.log_bytes_used) == (1000, 0)
        ref = agent.ref(run_id)
        agent.send(log=agent_pb2.LogData(run=ref, stream="stdout", data=b"a" * 600, attempt=1))
        agent.send(log=agent_pb2.LogData(run=ref, stream="stdout", data=b"[torpor] 5,000 bytes dropped\n",
                                         attempt=1, dropped_bytes=5000))
        a = assert_eventually(lambda: (x := _attempt(c, run_id)).log_dropped_bytes and x)
        assert (a.log_bytes, a.log_dropped_bytes) == (600 + 29, 5000)
        events = [e for e in c.get_run(run_id).events if e.type == "logs_dropped"]
        assert len(events) == 1 and "attempt 1" in events[0].detail
        # An agent that does not keep the budget: past budget + 1 MiB, the coordinator drops and counts.
        big = b"b" * ((1 << 20) + 400)  # 629 + this is past 1000 + 1 MiB
        agent.send(log=agent_pb2.LogData(run=ref, stream="stdout", data=big, attempt=1))
        agent.send(log=agent_pb2.LogData(run=ref, stream="stdout", data=b"c" * 100, attempt=1))
        a = assert_eventually(lambda: (x := _attempt(c, run_id)).log_dropped_bytes > 5000 and x)
        assert (a.log_bytes, a.log_dropped_bytes) == (629 + len(big), 5100)
        stored = b"".join(c.data for c in c.stream_logs(run_id))
        assert stored.endswith(big) and b"c" not in stored
        assert len([e for e in c.get_run(run_id).events if e.type == "logs_dropped"]) == 1  # once per attempt
        # The host is lost: the restore tells the next agent what the attempt already kept.
        agent.checkpoint(run_id, "ck1", kind=common_pb2.PERIODIC)
        assert_eventually(lambda: len(c.get_run(run_id).checkpoints) == 1)
        other = agents("other", target=coord)
        agent.heartbeat = False  # the host hangs: no heartbeats, the lease runs out
        restore = other.wait_command("restore", run_id, timeout=30).restore.spec
        assert (restore.log_budget_bytes, restore.log_bytes_used) == (1000, 629 + len(big))


def test_a_run_may_trigger_only_so_many_children(start_coordinator, agents):
    coord = start_coordinator(limits=Limits(max_children=3))
    with Client(f"127.0.0.1:{coord.port}", api_key=API_KEY) as c:
        deploy(c, task("parent"), task("kid"))
        agent = agents(target=coord)
        parent = running(c, agent, "parent")

        def trigger(request_id: str, *items: agent_pb2.TriggerItem) -> agent_pb2.ChildTriggered:
            agent.send(child_trigger=agent_pb2.ChildTrigger(run=agent.ref(parent), request_id=request_id,
                                                            items=list(items)))
            return _answer(agent, request_id)

        first = trigger("r1", agent_pb2.TriggerItem(task="kid", payload_json="1", idempotency_key="k1"),
                        agent_pb2.TriggerItem(task="kid", payload_json="2"))
        assert len(first.run_ids) == 2 and not first.error
        # Three more is one too many: refused whole, nothing created, the figures given.
        over = trigger("r2", *[agent_pb2.TriggerItem(task="kid", payload_json=str(n)) for n in range(2)])
        assert not over.run_ids and "--max-children" in over.error
        assert (over.limit.what, over.limit.limit, over.limit.actual) == ("children", 3, 4)
        assert over.limit.setting == "torpor coordinator --max-children"
        # The idempotency key's existing run is no new child; the last one fits.
        again = trigger("r3", agent_pb2.TriggerItem(task="kid", payload_json="1", idempotency_key="k1"),
                        agent_pb2.TriggerItem(task="kid", payload_json="3"))
        assert again.run_ids[0] == first.run_ids[0] and not again.error
        full = trigger("r4", agent_pb2.TriggerItem(task="kid", payload_json="4"))
        assert full.limit.actual == 4 and not full.run_ids
        kids = [r for r in c.list_runs(task="kid").runs if r.parent_run_id == parent]
        assert len(kids) == 3


def _answer(agent, request_id: str) -> agent_pb2.ChildTriggered:  # type: ignore[no-untyped-def]
    def found():  # type: ignore[no-untyped-def]
        for m in list(agent.commands):
            if m.WhichOneof("msg") == "child_triggered" and m.child_triggered.request_id == request_id:
                return m.child_triggered
        return None

    return assert_eventually(found)
